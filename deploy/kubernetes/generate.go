// Package kubernetes holds what checks and generates the manifests in this
// directory: `kubectl apply -k deploy/kubernetes` installs orphanwatch on
// every node (docs/kubernetes.md). Nothing in the agent imports it.
//
// The alert rules have one source, deploy/prometheus/orphanwatch.rules.yml;
// prometheusrule.yaml is generated from it and a test fails when the two
// differ. After editing the rules, run:
//
//	go generate ./deploy/kubernetes
package kubernetes

//go:generate go run ./genrules -rules ../prometheus/orphanwatch.rules.yml -out prometheusrule.yaml
