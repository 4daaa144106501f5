package billing

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/baseten/billing-functions/pkg/table"
)

// AlertSource and AlertDetailType name a spend alert on the bus, for the
// core app's rule to match.
const (
	AlertSource     = "billing-functions"
	AlertDetailType = "Spend threshold crossed"
)

// AlertBus puts alerts, each a JSON detail, on the bus the core app
// reads (package alertbus: EventBridge). It answers the indexes of the
// details it did not take.
type AlertBus interface {
	Put(ctx context.Context, details []string) (refused []int, err error)
}

// SetAlertBus sends spend alerts to bus; without one they are only logged.
func (s *Service) SetAlertBus(bus AlertBus) { s.alerts = bus }

// alertEvent is an alert as the core app receives it: AlertID names the
// organization, period and threshold, so that a consumer that meets it
// twice (EventBridge delivers at least once) can tell.
type alertEvent struct {
	AlertID   string `json:"alert_id"`
	Namespace string `json:"namespace"`
	Alert
}

// alertTries bounds the attempts to put one batch of alerts.
const alertTries = 3

// sendAlerts tells the core app about each threshold crossed: one log line
// each, and one event each on the alert bus, then marks each sent on the
// spend record. Each was claimed by exactly one write (ClaimAlert), so one
// invocation sends it; one it could not send
// (the bus refused it three times, or the invocation died first) stays
// pending on the record, and the next usage write of the organization, or
// reconcile, sends it (pendingAlerts). The bus may so see an alert twice,
// with the same alert_id, but never miss one.
func (s *Service) sendAlerts(ctx context.Context, alerts []Alert) {
	if len(alerts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	for _, a := range alerts {
		s.log.InfoContext(ctx, "spend alert", "org_id", a.OrgID, "threshold", a.Threshold, "amount", a.Amount, "cap", a.Cap,
			"currency", a.Currency, "period_start", a.PeriodStart)
	}
	if s.alerts == nil {
		s.markSent(ctx, alerts) // the log line is the channel
		return
	}
	for start := 0; start < len(alerts); start += 10 { // PutEvents takes 10 entries
		group := alerts[start:min(start+10, len(alerts))]
		pending := group
		var err error
		for try := 1; try <= alertTries && len(pending) > 0; try++ {
			pending, err = s.putAlerts(ctx, pending)
			if len(pending) > 0 && try < alertTries {
				if sleepCtx(ctx, time.Duration(try)*50*time.Millisecond) != nil {
					break
				}
			}
		}
		s.markSent(ctx, without(group, pending))
		for _, a := range pending {
			msg := "not put"
			if err != nil {
				msg = err.Error()
			}
			s.log.ErrorContext(ctx, "spend alert not sent to the bus; it stays on the spend record", "org_id", a.OrgID,
				"threshold", a.Threshold, "period_start", a.PeriodStart, "error", msg)
		}
	}
}

// putAlerts puts alerts on the bus and returns those it did not take.
func (s *Service) putAlerts(ctx context.Context, alerts []Alert) ([]Alert, error) {
	details := make([]string, len(alerts))
	for i, a := range alerts {
		raw, _ := json.Marshal(alertEvent{AlertID: alertID(s.cfg.Namespace, a), Namespace: s.cfg.Namespace, Alert: a})
		details[i] = string(raw)
	}
	refused, err := s.alerts.Put(ctx, details)
	var failed []Alert
	for _, i := range refused {
		if i >= 0 && i < len(alerts) {
			failed = append(failed, alerts[i])
		}
	}
	return failed, err
}

// markSent records each alert as sent on its spend record.
func (s *Service) markSent(ctx context.Context, alerts []Alert) {
	now := time.Now()
	for _, a := range alerts {
		if err := s.store.MarkAlertSent(ctx, a.OrgID, a.PeriodStart, strconv.FormatInt(a.Threshold, 10), now); err != nil && !errors.Is(err, table.ErrConditionFailed) {
			s.log.WarnContext(ctx, "could not mark a spend alert sent; it may be sent again, with the same alert_id", "org_id", a.OrgID,
				"threshold", a.Threshold, "error", err.Error())
		}
	}
}

// without is all but the alerts in some.
func without(all, some []Alert) []Alert {
	var out []Alert
	for _, a := range all {
		if !slices.Contains(some, a) {
			out = append(out, a)
		}
	}
	return out
}

func alertID(namespace string, a Alert) string {
	return namespace + ":" + a.OrgID + ":" + strconv.FormatInt(a.PeriodStart, 10) + ":" + strconv.FormatInt(a.Threshold, 10)
}
