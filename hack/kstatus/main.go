// Command kstatus says what Flux's kustomize-controller would conclude about the health of
// objects, with the real libraries it uses:
//
//   - "kstatus": sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the kstatus rules;
//   - "flux": github.com/fluxcd/cli-utils/pkg/kstatus/status.Compute, the fork kustomize-controller
//     runs for `wait: true` and `healthChecks`;
//   - "cel": when -exprs names a Kustomization, its `spec.healthCheckExprs` entry for the object's
//     apiVersion and kind, evaluated by github.com/fluxcd/pkg/runtime/cel.StatusEvaluator, the
//     evaluator kustomize-controller runs for `healthCheckExprs`.
//
// Usage: kstatus [-exprs kustomization.yaml] object.yaml...
// Prints one JSON object per line: {"file", "kstatus", "flux", "cel", "celError", "message"};
// "cel" is "Error" when an expression cannot be evaluated (e.g. it reads `status` of an object
// that has none yet): kustomize-controller then reports the error and polls again.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	File     string `json:"file"`
	Kstatus  string `json:"kstatus"`
	Flux     string `json:"flux"`
	CEL      string `json:"cel,omitempty"`
	CELError string `json:"celError,omitempty"`
	Message  string `json:"message"`
}

func main() {
	exprsFile := flag.String("exprs", "", "a Flux Kustomization whose spec.healthCheckExprs to evaluate")
	flag.Parse()
	var exprs []kustomize.CustomHealthCheck
	if *exprsFile != "" {
		var ks struct {
			Spec struct {
				HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
			} `json:"spec"`
		}
		load(*exprsFile, &ks)
		exprs = ks.Spec.HealthCheckExprs
		if len(exprs) == 0 {
			fail("%s: no spec.healthCheckExprs", *exprsFile)
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, file := range flag.Args() {
		// As the API server's objects reach kustomize-controller: JSON decoded into unstructured
		// (whole numbers are int64, which kstatus requires of generations).
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(toJSON(file)); err != nil {
			fail("%s: %v", file, err)
		}
		r := result{File: file}
		res, err := status.Compute(u)
		if err != nil {
			fail("%s: kstatus: %v", file, err)
		}
		r.Kstatus, r.Message = res.Status.String(), res.Message
		fres, err := fluxstatus.Compute(u)
		if err != nil {
			fail("%s: flux kstatus: %v", file, err)
		}
		r.Flux = fres.Status.String()
		for _, e := range exprs {
			if e.APIVersion != u.GetAPIVersion() || e.Kind != u.GetKind() {
				continue
			}
			evaluator, err := cel.NewStatusEvaluator(&e.HealthCheckExpressions)
			if err != nil {
				fail("%s: %v", *exprsFile, err)
			}
			cres, err := evaluator.Evaluate(context.Background(), u)
			if err != nil {
				// kustomize-controller reports the error and polls again until its timeout.
				r.CEL, r.CELError = "Error", err.Error()
				continue
			}
			r.CEL = cres.Status.String()
		}
		if err := out.Encode(r); err != nil {
			fail("%v", err)
		}
	}
}

// toJSON is the first YAML document of a file (a Kustomization file may hold several), as JSON.
func toJSON(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	doc := strings.SplitN(string(data), "\n---", 2)[0]
	out, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		fail("%s: %v", path, err)
	}
	return out
}

func load(path string, into any) {
	if err := json.Unmarshal(toJSON(path), into); err != nil {
		fail("%s: %v", path, err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(2)
}
