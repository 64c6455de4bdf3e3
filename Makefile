# The two commands of the README, and what they are made of.
#   make demo   runs the main job end to end on this machine
#   make test   brings up the real parts and runs every check CI runs: go vet,
#               gofmt, staticcheck, govulncheck, go test -race, a short fuzz run

GO ?= go
export CI_TIMEOUT ?= 60m

.PHONY: demo demo-fresh test parts vet fmt-check race bench build tools staticcheck govulncheck vulndb fuzz

# Checkers, pinned, installed from the Go module proxy into bin/tools.
STATICCHECK_VERSION = v0.8.2
GOVULNCHECK_VERSION = v1.9.0
# The Go vulnerability database as the module golang.org/x/vulndb carries it
# (data/osv: one OSV file per vulnerability), from the Go module proxy, put
# into the layout govulncheck reads with -db file:// by the module's own
# cmd/indexdb. The database's own address cannot be reached from CI; this
# snapshot is pinned, so move the version on to see newer entries.
VULNDB_VERSION = v0.0.0-20261105234957-e22db6528018
TOOLS = $(CURDIR)/bin/tools
VULNDB = $(CURDIR)/bin/vulndb-$(VULNDB_VERSION)
# The fuzz targets `make test` runs, as package:target:executions. The
# budget is a count, not a duration: with a duration, Go before 1.27 can fail
# a clean run with "context deadline exceeded" as the time runs out on a busy
# machine (go.dev/issue/75804). Each takes seconds on an idle machine.
FUZZ_TARGETS = ./pipeline/:FuzzParse:30000 ./repos/:FuzzParseVersion:300000 ./repos/:FuzzParseConventional:300000

build:
	$(GO) build -o bin/release ./cmd/release

parts:
	bash fixtures/up.sh >/dev/null

demo: parts build
	bash fixtures/demo.sh

# make demo twice from a throwaway registry that has never seen it (CI runs it).
demo-fresh:
	bash fixtures/demo-fresh.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

race:
	$(GO) test -race -timeout $(CI_TIMEOUT) ./...

tools:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	GOBIN=$(TOOLS) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

staticcheck: tools
	$(TOOLS)/staticcheck ./...

vulndb: $(VULNDB)/index/modules.json

$(VULNDB)/index/modules.json:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) || \
		{ echo "govulncheck cannot run: golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) did not install from the Go module proxy" >&2; exit 1; }
	@src=$$(cd "$${TMPDIR:-/tmp}" && $(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	if [ ! -d "$$src/data/osv" ]; then \
		echo "govulncheck cannot run: the vulnerability database golang.org/x/vulndb@$(VULNDB_VERSION) did not download from the Go module proxy" >&2; exit 1; \
	fi; \
	rm -rf $(VULNDB).tmp && $(TOOLS)/indexdb -vulns "$$src/data/osv" -out $(VULNDB).tmp && \
	rm -rf $(VULNDB) && mv $(VULNDB).tmp $(VULNDB) && \
	echo "vulndb: $$(find $(VULNDB)/ID -name "*.json" | wc -l) entries from golang.org/x/vulndb@$(VULNDB_VERSION)"

govulncheck: tools vulndb
	bash .ci/govulncheck $(TOOLS)/govulncheck $(VULNDB)

# A short fuzz run of every fuzz target; the seed corpora also run in race.
# A failing input is written under the package's testdata/fuzz/.
fuzz:
	@mkdir -p bin
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*} rest=$${t#*:}; fn=$${rest%%:*} n=$${rest#*:}; \
		start=$$(date +%s); \
		if ! $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $${n}x -timeout 10m $$pkg >bin/fuzz-$$fn.log 2>&1; then \
			cat bin/fuzz-$$fn.log; echo "fuzz $$fn: FAILED"; exit 1; \
		fi; \
		echo "fuzz $$fn: $$(grep -o 'execs: [0-9]*' bin/fuzz-$$fn.log | tail -n 1 | cut -d' ' -f2) executions in $$(( $$(date +%s) - start ))s, $$(grep -o 'total: [0-9]*' bin/fuzz-$$fn.log | tail -n 1 | cut -d' ' -f2) inputs in the corpus"; \
	done

test: parts vet fmt-check staticcheck govulncheck race fuzz

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./pipeline/
