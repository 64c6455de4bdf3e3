package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
)

// TestInstances: an instance of a template is recorded once with the
// addresses its picker chose; ten processes creating ten instances at
// once never share an address; removing one frees its addresses, and
// removing it again is fine.
func TestInstances(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			// pick takes the first of 9300-9399 not taken, for api.
			pick := func(taken []string) (map[string]string, error) {
				for port := 9300; port < 9400; port++ {
					if a := fmt.Sprintf("127.0.0.1:%d", port); !slices.Contains(taken, a) {
						return map[string]string{"api": a}, nil
					}
				}
				return nil, errors.New("range spent")
			}
			if _, err := s.Instance(ctx, "p", "dev-a"); !errors.Is(err, pipeline.ErrNotFound) {
				t.Fatalf("Instance of none: %v, want ErrNotFound", err)
			}
			if _, err := s.CreateInstance(ctx, "p", "dev-a", "dev-*", pick); err != nil {
				t.Fatal(err)
			}
			again, err := s.CreateInstance(ctx, "p", "dev-a", "dev-*", func([]string) (map[string]string, error) {
				t.Error("pick called for an instance recorded already")
				return nil, nil
			})
			if err != nil || again.Listen["api"] != "127.0.0.1:9300" {
				t.Fatalf("CreateInstance again: %+v, %v", again, err)
			}
			if _, err := s.CreateInstance(ctx, "p", "dev-x", "dev-*", func([]string) (map[string]string, error) {
				return nil, errors.New("no")
			}); err == nil || err.Error() != "no" {
				t.Errorf("a picker's error: %v, want it as is", err)
			}

			var wg sync.WaitGroup
			errs := make([]error, 10)
			for i := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = s.CreateInstance(ctx, "p", fmt.Sprintf("dev-%d", i), "dev-*", pick)
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			list, err := s.Instances(ctx, "p")
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]string{}
			var names []string
			for _, in := range list {
				names = append(names, in.Name)
				if other, dup := seen[in.Listen["api"]]; dup {
					t.Errorf("%s and %s both hold %s", other, in.Name, in.Listen["api"])
				}
				seen[in.Listen["api"]] = in.Name
			}
			want := []string{"dev-0", "dev-1", "dev-2", "dev-3", "dev-4", "dev-5", "dev-6", "dev-7", "dev-8", "dev-9", "dev-a"}
			if diff := cmp.Diff(want, names); diff != "" {
				t.Errorf("instances (-want +got):\n%s", diff)
			}

			for range 2 {
				if err := s.RemoveInstance(ctx, "p", "dev-a"); err != nil {
					t.Fatal(err)
				}
			}
			b, err := s.CreateInstance(ctx, "p", "dev-b", "dev-*", pick)
			if err != nil || b.Listen["api"] != "127.0.0.1:9300" {
				t.Errorf("after dev-a is removed, dev-b got %+v (%v), want its address 127.0.0.1:9300", b, err)
			}
			if list, _ := s.Instances(ctx, "other"); len(list) != 0 {
				t.Errorf("another pipeline's instances: %+v", list)
			}
		})
	}
}
