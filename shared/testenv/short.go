package testenv

import "testing"

// skipShort skips a test that needs what (a server, a native library) when
// the tests run with -short: `go test -short ./...` is the fast layer, the
// logic that needs no server; `make test` runs everything.
func skipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s: skipped under -short (make test runs it)", what)
	}
}
