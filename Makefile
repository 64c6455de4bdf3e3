# The two commands of the README, and what they are made of.
#   make demo   runs the main job end to end on this machine
#   make test   brings up the real parts and runs every check CI runs

GO ?= go
export CI_TIMEOUT ?= 60m

.PHONY: demo test parts vet fmt-check race bench build

build:
	$(GO) build -o bin/release ./cmd/release

parts:
	bash fixtures/up.sh >/dev/null

demo: parts build
	bash fixtures/demo.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

race:
	$(GO) test -race -timeout $(CI_TIMEOUT) ./...

test: parts vet fmt-check race

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./pipeline/
