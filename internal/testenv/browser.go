package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium returns the path of the headless browser a test drives: Debian's
// chromium, which `make test` installs with apt-get (`make chromium`).
// Under -short the test is skipped. Without it the test is skipped saying
// why, except under `make test` (REQUIRE_BROWSER=1), where it fails: CI
// never skips a browser test.
func Chromium(t testing.TB) string {
	t.Helper()
	Need(t, "Debian's chromium")
	for _, candidate := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if candidate == "" {
			continue
		}
		if path, err := exec.LookPath(candidate); err == nil {
			return path
		}
	}
	const why = "Debian's chromium is not installed (`make chromium` installs it with apt-get; set CHROMIUM to another browser)"
	if os.Getenv("REQUIRE_BROWSER") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
	return ""
}
