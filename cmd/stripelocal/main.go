// Command stripelocal runs the local Stripe as a standalone process, for
// `make dev` and for trying the API by hand:
//
//	stripelocal -addr 127.0.0.1:12111 [-validator http://127.0.0.1:12112] \
//	    [-webhook http://127.0.0.1:3000/integrations/stripe/webhooks -webhook-secret whsec_…]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baseten/billing-functions/internal/stripelocal"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:12111", "address to listen on")
	validator := flag.String("validator", "", "stripe-mock URL that checks every request (empty: no check)")
	webhook := flag.String("webhook", "", "register a webhook endpoint with this URL")
	secret := flag.String("webhook-secret", "", "the endpoint's signing secret (whsec_…)")
	retry := flag.Duration("webhook-retry", 5*time.Second, "first webhook retry delay; doubles per attempt")
	verbose := flag.Bool("v", false, "log each webhook delivery attempt")
	flag.Parse()

	logf := func(string, ...any) {}
	if *verbose {
		logf = log.Printf
	}
	srv := stripelocal.New(stripelocal.Options{Validator: *validator, RetryBase: *retry, Logf: logf})
	if *webhook != "" {
		if *secret == "" {
			log.Fatal("-webhook needs -webhook-secret")
		}
		srv.AddWebhookEndpoint(*webhook, []string{*secret}, nil, "")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen on %s: %v (choose another with -addr)", *addr, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(shutdown)
		srv.Close()
	}()
	fmt.Printf("local Stripe listening on http://%s (API version %s)\n", ln.Addr(), stripelocal.APIVersion)
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
