package testenv

import (
	"io"
	"net/http"
	"net/url"
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

// noRedirects is a client that stops at a redirect, so that a test sees
// where a hosted page sends the customer.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// PostForm posts a form of the local Stripe's hosted pages as a browser
// would, without following the redirect, and returns the answer and its
// body.
func PostForm(t testing.TB, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := noRedirects.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

// GetPage reads a hosted page without following a redirect: its status and
// body.
func GetPage(t testing.TB, u string) (int, string) {
	t.Helper()
	resp, err := noRedirects.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}
