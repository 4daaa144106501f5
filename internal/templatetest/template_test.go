// Package templatetest checks template.yaml: that it lints clean, that sam
// builds three distinct functions from it, and that it promises what the
// issues ask (schema, encryption, least privilege, outputs).
package templatetest

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

var functions = map[string]string{
	"WebhookFunction":        "functions/webhook",
	"SubscribeFunction":      "functions/subscribe",
	"UpsertProductsFunction": "functions/upsert-products",
}

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

func venvTool(t *testing.T, name string) string {
	t.Helper()
	return testenv.VenvTool(t, name)
}

// tmpl is template.yaml as JSON, decoded by cfn-lint so that the short
// intrinsic forms (!Ref, !Sub, …) become their long forms.
type tmpl struct {
	Parameters map[string]map[string]any
	Conditions map[string]any
	Globals    map[string]map[string]any
	Resources  map[string]struct {
		Type       string
		Metadata   map[string]any
		Properties map[string]any
	}
	Outputs map[string]map[string]any
}

var decoded struct {
	once sync.Once
	tp   tmpl
	err  error
}

// load decodes the template once per run: each decode starts Python.
func load(t *testing.T) tmpl {
	t.Helper()
	python := venvTool(t, "python")
	decoded.once.Do(func() {
		cmd := exec.Command(python, "-c",
			"import json,sys\nfrom cfnlint.decode import decode\nt,m=decode(sys.argv[1])\nassert not m, m\nprint(json.dumps(t))",
			filepath.Join(testenv.RepoRoot(), "template.yaml"))
		out, err := cmd.Output()
		if err != nil {
			decoded.err = fmt.Errorf("decode template: %w", err)
			return
		}
		decoded.err = json.Unmarshal(out, &decoded.tp)
	})
	if decoded.err != nil {
		t.Fatal(decoded.err)
	}
	return decoded.tp
}

func TestTemplate_CfnLintReportsNoErrors(t *testing.T) {
	cmd := exec.Command(venvTool(t, "cfn-lint"), "template.yaml")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cfn-lint: %v\n%s", err, out)
	}
}

func TestTemplate_SamValidateLintPasses(t *testing.T) {
	cmd := exec.Command(venvTool(t, "sam"), "validate", "--lint", "--template", "template.yaml", "--region", "us-east-1")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "SAM_CLI_TELEMETRY=0")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is a valid SAM Template") {
		t.Fatalf("sam validate --lint: %v\n%s", err, out)
	}
}

func TestTemplate_SamBuildMakesThreeDistinctArm64Bootstraps(t *testing.T) {
	buildDir := t.TempDir()
	cmd := exec.Command(venvTool(t, "sam"), "build", "--build-in-source", "--build-dir", buildDir, "--template", "template.yaml")
	cmd.Dir = testenv.RepoRoot()
	cmd.Env = append(os.Environ(), "SAM_CLI_TELEMETRY=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sam build: %v\n%s", err, out)
	}
	mod, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, found := strings.Cut(string(mod), "\ntoolchain ")
	toolchain, _, _ := strings.Cut(after, "\n")
	if !found || !strings.HasPrefix(toolchain, "go1.26.") {
		t.Fatalf("go.mod names no go1.26 toolchain: %q", toolchain)
	}
	sums := map[[32]byte]string{}
	for logicalID, pkg := range functions {
		bin := filepath.Join(buildDir, logicalID, "bootstrap")
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatalf("%s: %v", logicalID, err)
		}
		// ELF, 64-bit, little endian, machine EM_AARCH64 (183).
		if !bytes.HasPrefix(data, []byte("\x7fELF\x02\x01")) || data[18] != 183 {
			t.Errorf("%s/bootstrap is not a linux/arm64 ELF binary", logicalID)
		}
		if f, err := elf.NewFile(bytes.NewReader(data)); err != nil || f.Section(".symtab") != nil {
			t.Errorf("%s/bootstrap is not stripped (-ldflags=-s): symtab present or unreadable (%v)", logicalID, err)
		}
		sum := sha256.Sum256(data)
		if other, dup := sums[sum]; dup {
			t.Errorf("%s and %s have the same bootstrap: sam merged the functions", logicalID, other)
		}
		sums[sum] = logicalID

		info, err := exec.Command("go", "version", "-m", bin).Output()
		if err != nil {
			t.Fatalf("go version -m %s: %v", bin, err)
		}
		// Built with go.mod's toolchain (the newest patch release), not
		// whichever Go is installed.
		if first, _, _ := strings.Cut(string(info), "\n"); !strings.HasSuffix(first, ": "+toolchain) {
			t.Errorf("%s/bootstrap was built with %q, want %s", logicalID, first, toolchain)
		}
		for _, want := range []string{"\tpath\tgithub.com/baseten/billing-functions/" + pkg + "\n", "-tags=lambda.norpc", "-trimpath=true", "CGO_ENABLED=0", "GOARCH=arm64"} {
			if !strings.Contains(string(info), want) {
				t.Errorf("%s/bootstrap: build info lacks %q", logicalID, strings.TrimSpace(want))
			}
		}
	}
}

func TestTemplate_ParametersAndGlobals(t *testing.T) {
	tp := load(t)
	stage := tp.Parameters["Stage"]
	if got := stage["AllowedValues"]; !equalJSON(got, []string{"dev", "staging", "prod"}) {
		t.Errorf("Stage AllowedValues = %v", got)
	}
	for _, p := range []string{"Namespace", "StripeSecretArn"} {
		if _, ok := tp.Parameters[p]; !ok {
			t.Errorf("parameter %s missing", p)
		}
	}
	fn := tp.Globals["Function"]
	checks := map[string]any{"Runtime": "provided.al2023", "Architectures": []string{"arm64"}, "Handler": "bootstrap"}
	for k, want := range checks {
		if !equalJSON(fn[k], want) {
			t.Errorf("Globals.Function.%s = %v, want %v", k, fn[k], want)
		}
	}
	if fn["Timeout"] == nil || fn["MemorySize"] == nil {
		t.Error("Globals.Function needs an explicit Timeout and MemorySize")
	}
	if !equalJSON(fn["LoggingConfig"].(map[string]any)["LogFormat"], "JSON") {
		t.Error("logs must be JSON")
	}
}

// TestTemplate_EachFunctionOutlastsItsStripeRequests keeps every function's
// timeout at three Stripe requests or more (stripe-go tries a request up to
// three times), so that a slow Stripe makes the function answer, not time
// out.
func TestTemplate_EachFunctionOutlastsItsStripeRequests(t *testing.T) {
	tp := load(t)
	global := tp.Globals["Function"]["Timeout"]
	for logicalID := range functions {
		timeout := tp.Resources[logicalID].Properties["Timeout"]
		if timeout == nil {
			timeout = global
		}
		seconds, _ := timeout.(float64)
		if need := 3 * billing.StripeRequestTimeout.Seconds(); seconds < need {
			t.Errorf("%s times out after %vs; three Stripe requests take up to %vs", logicalID, seconds, need)
		}
	}
}

func TestTemplate_FunctionsUseMakefileBuilds(t *testing.T) {
	tp := load(t)
	makefile, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for logicalID := range functions {
		r := tp.Resources[logicalID]
		if r.Type != "AWS::Serverless::Function" || r.Metadata["BuildMethod"] != "makefile" || r.Properties["CodeUri"] != "." {
			t.Errorf("%s: want a makefile-built function with CodeUri '.', got %s %v %v", logicalID, r.Type, r.Metadata, r.Properties["CodeUri"])
		}
		target := regexp.MustCompile(`(?m)^build-` + logicalID + `:\n\t.*CGO_ENABLED=0.*\$\(ARTIFACTS_DIR\)/bootstrap`)
		if !target.Match(bytes.ReplaceAll(makefile, []byte("$(LAMBDA_ENV)"), []byte("CGO_ENABLED=0"))) {
			t.Errorf("Makefile has no build-%s target writing $(ARTIFACTS_DIR)/bootstrap", logicalID)
		}
	}
}

// TestTemplate_OnlyTheWebhookHasAPublicRoute also pins the one other
// trigger: the daily reconcile schedule of the subscribe function.
func TestTemplate_OnlyTheWebhookHasAPublicRoute(t *testing.T) {
	tp := load(t)
	for logicalID := range functions {
		events, _ := tp.Resources[logicalID].Properties["Events"].(map[string]any)
		if logicalID != "WebhookFunction" {
			if len(events) != 0 {
				t.Errorf("%s has event sources %v; it must have no public trigger", logicalID, events)
			}
			continue
		}
		if len(events) != 1 {
			t.Fatalf("WebhookFunction events = %v, want the one HTTP API route", events)
		}
		for _, e := range events {
			ev := e.(map[string]any)
			p := ev["Properties"].(map[string]any)
			if ev["Type"] != "HttpApi" || p["Method"] != "POST" || p["Path"] != "/integrations/stripe/webhooks" || p["PayloadFormatVersion"] != "2.0" {
				t.Errorf("webhook route = %v", ev)
			}
		}
	}
}

// The daily reconcile is a state machine that invokes subscribe's
// reconcile action step after step until one answers done, waits out a
// step refused as retryable, and repairs nothing.
func TestTemplate_TheDailyReconcileRunsStepsUntilDone(t *testing.T) {
	tp := load(t)
	sm := tp.Resources["ReconcileStateMachine"]
	events, _ := sm.Properties["Events"].(map[string]any)
	ev, _ := events["Daily"].(map[string]any)
	if p, _ := ev["Properties"].(map[string]any); len(events) != 1 || ev["Type"] != "ScheduleV2" || p["ScheduleExpression"] != "rate(1 day)" {
		t.Errorf("ReconcileStateMachine events = %v, want only the daily schedule", events)
	}
	def, _ := sm.Properties["Definition"].(map[string]any)
	states, _ := def["States"].(map[string]any)
	state := func(name string) map[string]any { s, _ := states[name].(map[string]any); return s }
	step := state("Step")
	params, _ := step["Parameters"].(map[string]any)
	payload, _ := params["Payload"].(map[string]any)
	if def["StartAt"] != "Step" || step["Resource"] != "arn:aws:states:::lambda:invoke" ||
		!equalJSON(params["FunctionName"], map[string]any{"Fn::GetAtt": []any{"SubscribeFunction", "Arn"}}) {
		t.Errorf("the Step state %v does not invoke SubscribeFunction", step)
	}
	if payload["action"] != "reconcile" || payload["replay"] != true || payload["repair"] != nil {
		t.Errorf("the step's input %v, want a reconcile that replays and repairs nothing", payload)
	}
	next := func(name string) (onTrue, otherwise string) {
		c := state(name)
		choices, _ := c["Choices"].([]any)
		if len(choices) != 1 {
			t.Fatalf("%s: choices %v", name, c["Choices"])
		}
		first := choices[0].(map[string]any)
		if first["BooleanEquals"] != true {
			t.Fatalf("%s: %v", name, first)
		}
		return fmt.Sprint(first["Variable"], " ", first["Next"]), fmt.Sprint(c["Default"])
	}
	for name, want := range map[string][2]string{
		"Answered":   {"$.step.answer.ok Progressed", "Refused"},
		"Progressed": {"$.step.answer.result.done Done", "Step"},
		"Refused":    {"$.step.answer.error.retryable Later", "Failed"},
	} {
		if onTrue, otherwise := next(name); onTrue != want[0] || otherwise != want[1] {
			t.Errorf("%s goes to %q, else %q; want %q, else %q", name, onTrue, otherwise, want[0], want[1])
		}
	}
	if state("Later")["Next"] != "Step" || state("Done")["Type"] != "Succeed" || state("Failed")["Type"] != "Fail" {
		t.Errorf("Later, Done and Failed: %v %v %v", state("Later"), state("Done"), state("Failed"))
	}
	policies, _ := sm.Properties["Policies"].([]any)
	if !equalJSON(policies, []any{map[string]any{"Statement": []any{map[string]any{"Sid": "ReconcileSteps", "Effect": "Allow",
		"Action": "lambda:InvokeFunction", "Resource": map[string]any{"Fn::GetAtt": []any{"SubscribeFunction", "Arn"}}}}}}) {
		t.Errorf("ReconcileStateMachine may %v; want to invoke SubscribeFunction only", policies)
	}
}

func TestTemplate_PoliciesAreLeastPrivilege(t *testing.T) {
	tp := load(t)
	for logicalID := range functions {
		policies, _ := tp.Resources[logicalID].Properties["Policies"].([]any)
		if len(policies) == 0 {
			t.Fatalf("%s has no policy", logicalID)
		}
		var secretResources []any
		for _, p := range policies {
			stmts, ok := p.(map[string]any)["Statement"].([]any)
			if !ok {
				t.Fatalf("%s: policy %v is not an inline statement list (a SAM policy template can hide a wildcard)", logicalID, p)
			}
			for _, s := range stmts {
				st := s.(map[string]any)
				for _, a := range asList(st["Action"]) {
					if strings.Contains(a.(string), "*") {
						t.Errorf("%s: wildcard action %v", logicalID, a)
					}
					if strings.HasPrefix(a.(string), "secretsmanager:") {
						if a != "secretsmanager:GetSecretValue" {
							t.Errorf("%s: secrets action %v; only GetSecretValue is needed", logicalID, a)
						}
						secretResources = append(secretResources, asList(st["Resource"])...)
					}
				}
				for _, r := range asList(st["Resource"]) {
					if s, ok := r.(string); ok && strings.Contains(s, "*") {
						t.Errorf("%s: wildcard resource %v", logicalID, r)
					}
				}
			}
		}
		if !equalJSON(secretResources, []any{map[string]any{"Ref": "StripeSecretArn"}}) {
			t.Errorf("%s may read secrets %v; want only StripeSecretArn", logicalID, secretResources)
		}
	}
}

func TestTemplate_TableMatchesSchemaAndIsProtected(t *testing.T) {
	tp := load(t)
	tbl := tp.Resources["BillingTable"]
	p := tbl.Properties
	if p["BillingMode"] != "PAY_PER_REQUEST" {
		t.Errorf("BillingMode = %v", p["BillingMode"])
	}
	wantKeys := []map[string]string{{"AttributeName": table.AttrPK, "KeyType": "HASH"}, {"AttributeName": table.AttrSK, "KeyType": "RANGE"}}
	if !equalJSON(p["KeySchema"], wantKeys) {
		t.Errorf("KeySchema = %v, want %v (pkg/table's names)", p["KeySchema"], wantKeys)
	}
	gsis := p["GlobalSecondaryIndexes"].([]any)
	if len(gsis) != 1 || gsis[0].(map[string]any)["IndexName"] != table.IndexStripeID ||
		!equalJSON(gsis[0].(map[string]any)["KeySchema"], []map[string]string{{"AttributeName": table.AttrStripeID, "KeyType": "HASH"}}) {
		t.Errorf("GlobalSecondaryIndexes = %v, want %s on %s", gsis, table.IndexStripeID, table.AttrStripeID)
	}
	if !equalJSON(p["TimeToLiveSpecification"], map[string]any{"AttributeName": table.AttrExpiresAt, "Enabled": true}) {
		t.Errorf("TTL = %v", p["TimeToLiveSpecification"])
	}
	if !equalJSON(p["PointInTimeRecoverySpecification"], map[string]any{"PointInTimeRecoveryEnabled": true}) {
		t.Errorf("point-in-time recovery = %v", p["PointInTimeRecoverySpecification"])
	}
	if !equalJSON(p["SSESpecification"], map[string]any{"SSEEnabled": true}) {
		t.Errorf("encryption = %v", p["SSESpecification"])
	}
	if !equalJSON(p["DeletionProtectionEnabled"], map[string]any{"Fn::If": []any{"IsProd", true, false}}) ||
		!equalJSON(tp.Conditions["IsProd"], map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "Stage"}, "prod"}}) {
		t.Errorf("deletion protection = %v, want on exactly for prod", p["DeletionProtectionEnabled"])
	}
}

func TestTemplate_Outputs(t *testing.T) {
	tp := load(t)
	var names []string
	for name := range tp.Outputs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, want := range []string{"SubscribeFunctionArn", "TableName", "UpsertProductsFunctionArn", "WebhookUrl"} {
		if !slices.Contains(names, want) {
			t.Errorf("output %s missing (have %v)", want, names)
		}
	}
	if url := tp.Outputs["WebhookUrl"]["Value"]; !strings.Contains(toJSON(url), "/integrations/stripe/webhooks") {
		t.Errorf("WebhookUrl = %v", url)
	}
}

func TestSamconfig_HasEveryStageAndConfirmsProd(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "samconfig.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(data)
	for _, env := range []string{"default", "dev", "staging", "prod"} {
		if !strings.Contains(cfg, "["+env+".deploy.parameters]") || !strings.Contains(cfg, "["+env+".global.parameters]") {
			t.Errorf("samconfig.toml has no %s environment", env)
		}
	}
	_, prod, found := strings.Cut(cfg, "[prod.deploy.parameters]")
	if !found || !strings.Contains(prod, "confirm_changeset = true") || !strings.Contains(prod, `Stage=\"prod\"`) {
		t.Error("prod must confirm its change set and deploy Stage=prod")
	}
	// Three parallel go builds compile the shared dependencies three times.
	if _, build, _ := strings.Cut(cfg, "[default.build.parameters]"); !strings.Contains(build, "parallel = false") {
		t.Error("sam build must build the functions one after the other (parallel = false)")
	}
}

func asList(v any) []any {
	if l, ok := v.([]any); ok {
		return l
	}
	return []any{v}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func equalJSON(a, b any) bool { return toJSON(a) == toJSON(b) }

func TestTemplate_TheWebhookIsThrottledLoggedAndCapped(t *testing.T) {
	tp := load(t)
	api := tp.Resources["WebhookApi"].Properties
	route, _ := api["DefaultRouteSettings"].(map[string]any)
	if !equalJSON(route["ThrottlingRateLimit"], map[string]any{"Ref": "WebhookRateLimit"}) ||
		!equalJSON(route["ThrottlingBurstLimit"], map[string]any{"Ref": "WebhookBurstLimit"}) {
		t.Errorf("the webhook route's throttling = %v, want the stage's parameters", route)
	}
	logs, _ := api["AccessLogSettings"].(map[string]any)
	if !equalJSON(logs["DestinationArn"], map[string]any{"Fn::GetAtt": []any{"WebhookAccessLogGroup", "Arn"}}) ||
		!strings.Contains(fmt.Sprint(logs["Format"]), "$context.status") {
		t.Errorf("the webhook's access log = %v", logs)
	}
	if group := tp.Resources["WebhookAccessLogGroup"]; group.Type != "AWS::Logs::LogGroup" || group.Properties["RetentionInDays"] == nil {
		t.Errorf("WebhookAccessLogGroup = %+v, want a log group with a retention", group)
	}
	if got := tp.Resources["WebhookFunction"].Properties["ReservedConcurrentExecutions"]; !equalJSON(got, map[string]any{"Ref": "WebhookReservedConcurrency"}) {
		t.Errorf("the webhook's reserved concurrency = %v", got)
	}
	if got := tp.Resources["UpsertProductsFunction"].Properties["ReservedConcurrentExecutions"]; fmt.Sprint(got) != "1" {
		t.Errorf("upsert-products' reserved concurrency = %v, want 1: two runs never overlap", got)
	}
	if got := tp.Resources["SubscribeFunction"].Properties["ReservedConcurrentExecutions"]; got != nil {
		t.Errorf("subscribe's concurrency is capped at %v: the core app's calls must not be throttled by us", got)
	}
	for _, p := range []string{"WebhookRateLimit", "WebhookBurstLimit", "WebhookReservedConcurrency"} {
		if tp.Parameters[p]["Type"] != "Number" || tp.Parameters[p]["Default"] == nil {
			t.Errorf("parameter %s = %v, want a Number with a default", p, tp.Parameters[p])
		}
	}
}

func TestTemplate_AlarmsWatchWhatTheCodeEmits(t *testing.T) {
	tp := load(t)
	emitted := billing.EmittedMetrics()
	want := map[string]string{ // alarm → metric
		"WebhookFailuresAlarm": "WebhookFailed", "WebhookRejectedAlarm": "WebhookRejected", "WebhookUnavailableAlarm": "WebhookUnavailable",
		"ReconcileDriftAlarm": "ReconcileDifferences", "ReconcileHeartbeatAlarm": "ReconcileCompleted",
		"StripeRateLimitedAlarm": "StripeRateLimited",
	}
	for id, r := range tp.Resources {
		if r.Type != "AWS::CloudWatch::Alarm" {
			continue
		}
		// An alarm watches one metric, or sums several (Metrics, metric
		// math): each must be one the code emits.
		watched := []map[string]any{r.Properties}
		for _, q := range asList(r.Properties["Metrics"]) {
			query, _ := q.(map[string]any)
			if stat, ok := query["MetricStat"].(map[string]any); ok {
				metric, _ := stat["Metric"].(map[string]any)
				watched = append(watched, metric)
			}
		}
		if len(watched) > 1 {
			watched = watched[1:]
		}
		functions := map[string]bool{}
		for _, p := range watched {
			function := ""
			for _, d := range asList(p["Dimensions"]) {
				if dm, _ := d.(map[string]any); dm["Name"] == "Function" {
					function = fmt.Sprint(dm["Value"])
				}
			}
			functions[function] = true
			if p["Namespace"] != "BillingFunctions" || !slices.Contains(emitted[function], fmt.Sprint(p["MetricName"])) {
				t.Errorf("%s watches %v/%v of function %q, which the code does not emit", id, p["Namespace"], p["MetricName"], function)
			}
			if metric, ok := want[id]; ok && p["MetricName"] != metric {
				t.Errorf("%s watches %v, want %s", id, p["MetricName"], metric)
			}
		}
		if id == "StripeRateLimitedAlarm" && len(functions) != 3 {
			t.Errorf("%s sums the 429s of %v, want all three functions'", id, functions)
		}
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("alarms missing: %v", want)
	}
	hb := tp.Resources["ReconcileHeartbeatAlarm"].Properties
	if hb["TreatMissingData"] != "breaching" || hb["ComparisonOperator"] != "LessThanThreshold" || fmt.Sprint(hb["Period"]) != "86400" {
		t.Errorf("the reconcile heartbeat = %v: a day without a completed run must alarm", hb)
	}
	for _, id := range []string{"WebhookRejectedAlarm", "WebhookUnavailableAlarm"} {
		if p := tp.Resources[id].Properties; fmt.Sprint(p["EvaluationPeriods"]) == "1" {
			t.Errorf("%s alarms on one period: it is for a sustained run", id)
		}
	}
}

// TestTemplate_CheckovFindsNothingUnsuppressed runs checkov (pinned, in
// .venv-checkov) over the template: no failed check, and every suppressed
// one says why in the template.
func TestTemplate_CheckovFindsNothingUnsuppressed(t *testing.T) {
	testenv.Need(t, "checkov")
	bin := filepath.Join(testenv.RepoRoot(), ".venv-checkov", "bin", "checkov")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run `make test` or `make tools`, which install it", bin)
	}
	cmd := exec.Command(bin, "-f", "template.yaml", "--framework", "cloudformation", "--skip-download", "-o", "json")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.Output()
	var report struct {
		Summary struct {
			Passed, Failed, Skipped int
			ParsingErrors           int `json:"parsing_errors"`
		} `json:"summary"`
		Results struct {
			Failed []struct {
				CheckID  string `json:"check_id"`
				Resource string `json:"resource"`
			} `json:"failed_checks"`
			Skipped []struct {
				CheckID     string `json:"check_id"`
				Resource    string `json:"resource"`
				CheckResult struct {
					SuppressComment string `json:"suppress_comment"`
				} `json:"check_result"`
			} `json:"skipped_checks"`
		} `json:"results"`
	}
	if jerr := json.Unmarshal(out, &report); jerr != nil {
		t.Fatalf("checkov: %v %v\n%s", err, jerr, out)
	}
	for _, f := range report.Results.Failed {
		t.Errorf("checkov %s fails on %s: fix it, or suppress it in the template with a reason", f.CheckID, f.Resource)
	}
	for _, s := range report.Results.Skipped {
		if len(strings.TrimSpace(s.CheckResult.SuppressComment)) < 20 {
			t.Errorf("checkov %s is suppressed on %s without a reason", s.CheckID, s.Resource)
		}
	}
	if report.Summary.Passed == 0 || report.Summary.ParsingErrors != 0 || err != nil && report.Summary.Failed == 0 {
		t.Errorf("checkov: %+v, %v", report.Summary, err)
	}
	t.Logf("checkov %+v", report.Summary)
}
