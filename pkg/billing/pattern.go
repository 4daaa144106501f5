package billing

import (
	"regexp"
	"strings"
)

// pattern is a regular expression with a length range in bytes. Counted
// repetitions such as [^@\s]{1,255} compile into one regexp state per
// count: the seven validation patterns cost 11,000 allocations and a
// millisecond of every cold start. An unbounded class and a length check
// accept the same strings (every class here but the email's is ASCII, and
// email limits are in octets anyway).
type pattern struct {
	re       *regexp.Regexp
	min, max int
}

func newPattern(expr string, min, max int) pattern {
	return pattern{re: regexp.MustCompile(expr), min: min, max: max}
}

func (p pattern) MatchString(s string) bool {
	return len(s) >= p.min && len(s) <= p.max && p.re.MatchString(s)
}

var (
	emailLocalPart = newPattern(`^[^@\s]+$`, 1, 64)
	emailDomain    = newPattern(`^[^@\s]+$`, 1, 255)
	digits         = newPattern(`^[0-9]+$`, 1, 12)
)

// validEmail accepts local@domain with no space or second @, the local
// part at most 64 bytes and the domain at most 255.
func validEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	return ok && emailLocalPart.MatchString(local) && emailDomain.MatchString(domain)
}

// validAmount accepts a non-negative decimal with at most 12 digits on
// each side of the point.
func validAmount(s string) bool {
	whole, frac, hasPoint := strings.Cut(s, ".")
	return digits.MatchString(whole) && (!hasPoint || digits.MatchString(frac))
}
