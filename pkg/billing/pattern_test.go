package billing

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// TestPatterns_AcceptWhatTheCountedRegexpsAccept checks each length-bounded
// pattern against the counted regexp it replaced, on the boundaries and on
// random strings over an alphabet that mixes allowed and refused bytes.
func TestPatterns_AcceptWhatTheCountedRegexpsAccept(t *testing.T) {
	cases := []struct {
		name     string
		counted  string
		accepts  func(string) bool
		alphabet string
	}{
		{"catalog key", `^[a-z0-9-]{1,40}$`, keyPattern.MatchString, "az09-A_ .\xc3"},
		{"namespace", `^[a-z0-9-]{3,40}$`, namespacePattern.MatchString, "az09-A_ ."},
		{"table name", `^[a-zA-Z0-9_.-]{3,255}$`, tableNamePattern.MatchString, "aZ09_.-/ :"},
		{"org_id", `^[A-Za-z0-9_-]{1,64}$`, orgIDPattern.MatchString, "aZ09_-. \x00"},
		{"request_id", `^[A-Za-z0-9_.:-]{1,128}$`, requestIDPattern.MatchString, "aZ09_.:-/ "},
		{"email", `^[^@\s]{1,64}@[^@\s]{1,255}$`, validEmail, "ab@. \t"},
		{"amount", `^\d{1,12}(\.\d{1,12})?$`, validAmount, "09.-e "},
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			counted := regexp.MustCompile(c.counted)
			var inputs []string
			for _, n := range []int{0, 1, 2, 3, 4, 11, 12, 13, 39, 40, 41, 63, 64, 65, 127, 128, 129, 254, 255, 256, 300} {
				inputs = append(inputs, strings.Repeat("a", n), strings.Repeat("1", n),
					strings.Repeat("1", n)+"."+strings.Repeat("2", n), "x@"+strings.Repeat("d", n), strings.Repeat("l", n)+"@d")
			}
			for range 20000 {
				b := make([]byte, rng.IntN(30))
				for i := range b {
					b[i] = c.alphabet[rng.IntN(len(c.alphabet))]
				}
				inputs = append(inputs, string(b))
			}
			for _, in := range inputs {
				if got, want := c.accepts(in), counted.MatchString(in); got != want {
					t.Fatalf("%q: accepted %v, the counted regexp %v", in, got, want)
				}
			}
		})
	}
}
