# billing-functions. `make test` and `make dev` install what they need:
# Go tools pinned by version into ./bin, Python tools into .venv.

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
PYTHON  ?= python3
VENV    := $(CURDIR)/.venv
BIN     := $(CURDIR)/bin

# stripe-mock referees the local Stripe in the tests, pinned to the OpenAPI
# spec of our API version: stripe-go v76 sends 2023-10-16, which v0.183.0
# embeds. Billing meters are newer than that spec, so they are checked
# against v0.185.0's, 2024-04-10, the first that has them.
# internal/testenv names the same versions (a test checks).
STRIPE_MOCK_CORE   := v0.183.0
STRIPE_MOCK_METERS := v0.185.0
RIE_VERSION        := v0.0.0-20261030222936-bef5c4ba774d
UV_VERSION         := 0.13.8

# Deployed binaries: Lambda's provided.al2023 on arm64, without the RPC
# shim, stripped, with reproducible paths.
LAMBDA_GOFLAGS := -tags lambda.norpc -trimpath -ldflags=-s
LAMBDA_ENV     := CGO_ENABLED=0 GOOS=linux GOARCH=arm64

# Everything make builds, the Lambda binaries included, uses the Go release
# go.mod's toolchain line names (the newest 1.26 patch: net/http fixes over
# 1.26.8); the go command fetches it from the module proxy once.
export GOTOOLCHAIN := $(shell sed -n 's/^toolchain //p' go.mod)

export SAM_CLI_TELEMETRY := 0
export MOTO_SERVER       := $(CURDIR)/scripts/moto-server
export AWS_LAMBDA_RIE    := $(BIN)/aws-lambda-rie

# go vet, the tests and the binaries the tests build share one
# configuration (internal/testenv's TestBuildFlags: the race detector), so
# that each package is compiled once for all of them.
TEST_FLAGS := -race -tags lambda.norpc

.PHONY: help test test-short fuzz soak tools chromium dev bench fmt vet lint vulncheck clean upsert-products \
        build-WebhookFunction build-SubscribeFunction build-UpsertProductsFunction

help:
	@echo "make dev    run the whole system locally (no AWS, no Stripe account)"
	@echo "make test   run every test (installs its own tools)"
	@echo "go test -short ./...   the quick loop: every test that needs no server"
	@echo "make soak   the 10,000-delivery soak (make test runs a smaller one)"
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
# Python tools go into .venv through uv (pinned), which installs the same
# pinned packages in seconds where pip takes minutes.
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(VENV)/bin/python -r requirements-dev.txt
	touch $@

# checkov conflicts with aws-sam-cli's pins, so it has a venv of its own.
CHECKOV_VENV := $(CURDIR)/.venv-checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt $(VENV)/.installed
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(CHECKOV_VENV)/bin/python -r requirements-checkov.txt
	touch $@

$(BIN)/stripe-mock-%/stripe-mock:
	GOBIN=$(BIN)/stripe-mock-$* $(GO) install github.com/stripe/stripe-mock@$*

$(BIN)/aws-lambda-rie:
	GOBIN=$(BIN) $(GO) install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$(RIE_VERSION)

# Debian's Chromium, for the test that pays on the local Checkout page in a
# real browser (internal/testenv.Chromium). apt-get needs root: sudo when
# not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium with apt-get"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

tools: $(VENV)/.installed $(CHECKOV_VENV)/.installed $(BIN)/stripe-mock-$(STRIPE_MOCK_CORE)/stripe-mock \
       $(BIN)/stripe-mock-$(STRIPE_MOCK_METERS)/stripe-mock $(BIN)/aws-lambda-rie chromium

# --- checks --------------------------------------------------------------
fmt:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(TEST_FLAGS) ./...

# golangci-lint over every package, tests included (.golangci.yml):
# errcheck, govet, staticcheck, unused, errorlint, bodyclose and gosec, zero
# findings in functions/ and pkg/. Its staticcheck is staticcheck's own
# checks, so it is not run twice.
# It takes about 90 s of both cores to build, so the binary is kept
# outside the clone, per version and Go release, like the module cache:
# a machine builds it once, and every clone after uses it.
GOLANGCI_LINT_VERSION := v2.15.0
TOOLS_CACHE   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/billing-functions
GOLANGCI_LINT := $(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION)-$(GOTOOLCHAIN)/golangci-lint
$(GOLANGCI_LINT):
	GOBIN=$(dir $@) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

# Known vulnerabilities in what the binaries link, when govulncheck's
# database can be reached; otherwise it says so and the run goes on.
GOVULNCHECK_VERSION := v1.9.0
vulncheck:
	@if curl -fsS -m 5 -o /dev/null https://vuln.go.dev/index/db.json 2>/dev/null; then \
	  $(GO) run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) ./functions/... ./pkg/...; \
	else \
	  echo "govulncheck skipped: its database (vuln.go.dev) cannot be reached from this machine"; \
	fi

FUZZTIME     ?= 30s
TEST_TIMEOUT := 900

# Every test, with the race detector; the summary prints each package's
# time and fails a package that takes half of its timeout. The fuzz
# targets' properties run there over random mutations of their seeds;
# `make fuzz` runs them coverage-guided, which needs a build of its own.
test:
	@$(MAKE) --no-print-directory -j4 tools fmt vet lint vulncheck
	REQUIRE_BROWSER=1 $(GO) test $(TEST_FLAGS) -count=1 -v -parallel 8 -timeout $(TEST_TIMEOUT)s ./... 2>&1 | TEST_TIMEOUT=$(TEST_TIMEOUT) scripts/test-summary

# The quick loop: every test that needs no server, with none installed.
test-short:
	$(GO) test -short -count=1 ./...

# The full-size soak: 10,000 webhook deliveries (make test runs 1,000).
soak: tools
	SOAK_DELIVERIES=10000 $(GO) test -race -count=1 -v -timeout 30m -run '^TestSoak_' ./pkg/billing/

# Coverage-guided fuzzing: each target for FUZZTIME. A crash found becomes
# a file in testdata/fuzz, which plain `go test` then replays as a test.
fuzz:
	@for target in FuzzWebhookRequest FuzzDecodeCommand FuzzCatalogValidate; do \
	  echo "fuzz $$target for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./pkg/billing/ 2>&1 | tail -n 3; \
	done

# Figures for issue 8, measured in one run: bench/REPORT.md, bench/results.json.
bench: tools
	$(GO) run ./cmd/bench

clean:
	rm -rf .aws-sam bin .venv .venv-checkov bench/out

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
