# billing-functions. `make test` and `make dev` install what they need:
# Go tools pinned by version into ./bin, Python tools into .venv.

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
PYTHON  ?= python3
VENV    := $(CURDIR)/.venv
BIN     := $(CURDIR)/bin

STRIPE_MOCK_VERSION := v0.203.0
RIE_VERSION         := v0.0.0-20261030222936-bef5c4ba774d

# Deployed binaries: Lambda's provided.al2023 on arm64, without the RPC
# shim, stripped, with reproducible paths.
LAMBDA_GOFLAGS := -tags lambda.norpc -trimpath -ldflags=-s
LAMBDA_ENV     := CGO_ENABLED=0 GOOS=linux GOARCH=arm64

export SAM_CLI_TELEMETRY := 0
export MOTO_SERVER       := $(CURDIR)/scripts/moto-server
export STRIPE_MOCK       := $(BIN)/stripe-mock
export AWS_LAMBDA_RIE    := $(BIN)/aws-lambda-rie

.PHONY: help test fuzz tools dev bench fmt vet clean upsert-products \
        build-WebhookFunction build-SubscribeFunction build-UpsertProductsFunction

help:
	@echo "make dev    run the whole system locally (no AWS, no Stripe account)"
	@echo "make test   run every test (installs its own tools)"
	@echo "make bench  benchmarks, written to bench/"
	@echo "make upsert-products [STAGE=dev] [ARGS=--dry-run]  sync the Stripe catalog"

# --- sam build (BuildMethod: makefile) -----------------------------------
# sam build calls one target per function with ARTIFACTS_DIR set.
build-WebhookFunction:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_GOFLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/webhook
build-SubscribeFunction:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_GOFLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/subscribe
build-UpsertProductsFunction:
	$(LAMBDA_ENV) $(GO) build $(LAMBDA_GOFLAGS) -o $(ARTIFACTS_DIR)/bootstrap ./functions/upsert-products

# --- tools ---------------------------------------------------------------
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(BIN)/stripe-mock:
	GOBIN=$(BIN) $(GO) install github.com/stripe/stripe-mock@$(STRIPE_MOCK_VERSION)

$(BIN)/aws-lambda-rie:
	GOBIN=$(BIN) $(GO) install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$(RIE_VERSION)

tools: $(VENV)/.installed $(BIN)/stripe-mock $(BIN)/aws-lambda-rie

# --- checks --------------------------------------------------------------
fmt:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

FUZZTIME ?= 30s

test: tools fmt vet
	$(GO) test -race -count=1 -v ./... 2>&1 | scripts/test-summary
	$(MAKE) --no-print-directory fuzz

# Fuzz smoke runs: each target for FUZZTIME. A crash found becomes a file in
# testdata/fuzz, which plain `go test` then replays as a regular test.
fuzz:
	@for target in FuzzWebhookRequest FuzzDecodeCommand FuzzCatalogValidate; do \
	  echo "fuzz $$target for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./pkg/billing/ 2>&1 | tail -n 3; \
	done

# Figures for issue 8, measured in one run: bench/REPORT.md, bench/results.json.
bench: tools $(BIN)/aws-lambda-rie
	$(GO) run ./cmd/bench

clean:
	rm -rf .aws-sam bin .venv bench/out

# The catalog, for people: `make upsert-products` calls the local setup's
# function (make dev); STAGE=dev calls the deployed stage's; ARGS=--dry-run
# only shows the plan.
upsert-products:
	$(GO) run ./cmd/billingctl $(if $(STAGE),--stage $(STAGE)) upsert-products $(ARGS)

# The whole system locally: moto, the local Stripe, the three bootstraps
# under aws-lambda-rie, a webhook gateway on :3000 and the Invoke API on
# :3001. Ctrl-C stops everything.
dev: $(VENV)/.installed $(BIN)/aws-lambda-rie
	$(GO) run ./cmd/billing-dev
