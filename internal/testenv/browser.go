package testenv

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
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

// Answer is an HTTP answer already read and closed: its status, headers and
// body.
type Answer struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// Do sends a request with c and reads and closes the answer.
func Do(c *http.Client, req *http.Request) (Answer, error) {
	resp, err := c.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	return Answer{StatusCode: resp.StatusCode, Header: resp.Header, Body: raw}, err
}

// MustDo is Do that fails the test when no answer came.
func MustDo(t testing.TB, c *http.Client, req *http.Request) Answer {
	t.Helper()
	a, err := Do(c, req)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// PostForm posts a form of the local Stripe's hosted pages as a browser
// would, without following the redirect, and returns the answer and its
// body.
func PostForm(t testing.TB, u string, form url.Values) (Answer, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	a := MustDo(t, noRedirects, req)
	return a, string(a.Body)
}

// GetPage reads a hosted page without following a redirect: its status and
// body.
func GetPage(t testing.TB, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := MustDo(t, noRedirects, req)
	return a.StatusCode, string(a.Body)
}
