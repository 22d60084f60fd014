package exporter

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

var (
	rulesDir   = filepath.Join(testenv.ModuleRoot(), "deploy", "prometheus")
	rulesFile  = filepath.Join(rulesDir, "orphanwatch.rules.yml")
	rulesTests = filepath.Join(rulesDir, "orphanwatch.rules.test.yml")
	dashboard  = filepath.Join(testenv.ModuleRoot(), "deploy", "grafana", "orphanwatch.json")
	runbook    = filepath.Join(testenv.ModuleRoot(), "docs", "runbook.md")
	// runbookURL is docs/runbook.md on the module's repository.
	runbookURL = "https://github.com/orphanwatch/orphanwatch/blob/main/docs/runbook.md#"
)

func TestAlertRulesPassPromtool(t *testing.T) {
	testenv.RequireCommands(t, "promtool")
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", filepath.Base(rulesTests)}} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = rulesDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// Every alert is exercised by a promtool test that expects it to fire, and
// its runbook annotation leads to a section of docs/runbook.md.
func TestEveryAlertHasAFiringTestAndARunbookSection(t *testing.T) {
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	data, err := os.ReadFile(rulesTests)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	anchors := runbookAnchors(t)
	want := []string{"PostgresAdoptedChildCrash", "PostgresPostmasterIsPID1", "PostgresOrphanAdopted", "PostgresOOMKill", "OrphanwatchEventsLost", "OrphanwatchDown"}
	seen := map[string]bool{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			seen[r.Alert] = true
			if !fires[r.Alert] {
				t.Errorf("%s: no promtool test expects it to fire", r.Alert)
			}
			// runbook_url: what Alertmanager templates and
			// kubernetes-mixin's alerts use; the repository's main branch.
			link := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(link, runbookURL)
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q is not %s<a section of docs/runbook.md>", r.Alert, link, runbookURL)
			}
			if r.Labels["severity"] != "critical" && r.Labels["severity"] != "warning" {
				t.Errorf("%s: severity %q", r.Alert, r.Labels["severity"])
			}
		}
	}
	for _, a := range want {
		if !seen[a] {
			t.Errorf("alert %s missing from %s", a, rulesFile)
		}
	}
}

// runbookAnchors are the GitHub anchors of the runbook's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(runbook)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	anchors := map[string]bool{}
	notSlug := regexp.MustCompile(`[^a-z0-9 _-]`)
	scan := bufio.NewScanner(f)
	for scan.Scan() {
		if h, ok := strings.CutPrefix(scan.Text(), "#"); ok {
			h = strings.TrimSpace(strings.TrimLeft(h, "#"))
			anchors[strings.ReplaceAll(notSlug.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
		}
	}
	return anchors
}

// exposedNames scrapes the exporter's real HTTP handler after the seed
// incident and returns the metric families it exposes.
func exposedNames(t *testing.T) map[string]bool {
	t.Helper()
	f := newFixture(t, Config{})
	f.seedIncident(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Listeners: []net.Listener{l}, TelemetryPath: "/metrics", Registry: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	_, body := get(t, httpClient, "http://"+l.Addr().String()+"/metrics")
	names := map[string]bool{"up": true} // Prometheus' own, per target
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			names[strings.Fields(rest)[0]] = true
		}
	}
	return names
}

var httpClient = &http.Client{}

// metricName finds what looks like a metric name in PromQL: orphanwatch's,
// and Prometheus' up.
var metricName = regexp.MustCompile(`\b(orphanwatch_[a-zA-Z0-9_]+|up)\b[{\[ ),]`)

func usedNames(expr string) []string {
	var out []string
	for _, m := range metricName.FindAllStringSubmatch(expr+" ", -1) {
		out = append(out, m[1])
	}
	return out
}

func TestDashboardAndRulesUseExposedMetrics(t *testing.T) {
	exposed := exposedNames(t)

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	data, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := usedNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: no metric found in %q", p.Title, tg.Expr)
			}
			for _, n := range names {
				queries++
				if !exposed[n] {
					t.Errorf("panel %q uses %s, which the exporter does not expose", p.Title, n)
				}
			}
		}
	}
	others := map[string]string{}
	for _, a := range dash.Annotations.List {
		others["annotation "+a.Name] = a.Expr
	}
	for _, v := range dash.Templating.List {
		others["variable "+v.Name] = v.Definition
	}
	for what, expr := range others {
		for _, n := range usedNames(expr) {
			queries++
			if !exposed[n] {
				t.Errorf("dashboard %s uses %s, which the exporter does not expose", what, n)
			}
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			for _, n := range usedNames(r.Expr) {
				queries++
				if !exposed[n] {
					t.Errorf("alert %s uses %s, which the exporter does not expose", r.Alert, n)
				}
			}
		}
	}
	if queries < 20 {
		t.Errorf("only %d metric uses found: is the name pattern still right?", queries)
	}
}
