// meridian-helm renders a Helm chart the way `helm template` does, for the features Meridian's
// chart uses. Helm itself cannot be installed from the package registries this project reaches,
// so this small renderer, built only from Debian's Go packages (sprig, sigs.k8s.io/yaml,
// gojsonschema), stands in for it in the tests.
//
// What it implements, as Helm 3 does:
//   - Go text/template with sprig's TxtFuncMap (less env/expandenv, which Helm removes) and
//     Helm's own include, tpl, required, toYaml, fromYaml, fromYamlArray, toJson, fromJson, lookup
//     (always empty, as in `helm template`);
//   - .Values: values.yaml, then each -f file, then --set and --set-file, merged as Helm
//     coalesces them (maps merge deeply, a null deletes the key), and validated against
//     values.schema.json when the chart has one;
//   - .Release (Name, Namespace, Service, IsInstall, IsUpgrade, Revision), .Chart (from
//     Chart.yaml), .Capabilities (KubeVersion, APIVersions.Has), .Template (Name, BasePath);
//   - templates whose names start with `_` are helpers only; NOTES.txt is rendered (so its
//     errors show) but printed only with --notes; crds/ are printed only with --include-crds;
//   - output: `---` documents with `# Source: CHART/templates/FILE` comments, ordered by
//     Helm's install order of kinds, then by file name; `<no value>` becomes empty.
//
// Usage: meridian-helm template RELEASE CHART_DIR [--namespace NS] [-f FILE]... [--set K=V]...
//
//	[--set-file K=FILE]... [--api-versions GROUP/VERSION[/KIND]]... [--include-crds] [--notes]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

type values = map[string]interface{}

type options struct {
	release     string
	chartDir    string
	namespace   string
	valueFiles  []string
	sets        []string
	setFiles    []string
	apiVersions []string
	includeCRDs bool
	notes       bool
}

func main() {
	opts, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		fmt.Fprintln(os.Stderr, "usage: meridian-helm template RELEASE CHART_DIR [--namespace NS] [-f FILE]... [--set K=V]... [--set-file K=FILE]... [--api-versions G/V]... [--include-crds] [--notes]")
		os.Exit(2)
	}
	out, err := render(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func parseArgs(args []string) (options, error) {
	opts := options{namespace: "default"}
	if len(args) < 1 || args[0] != "template" {
		return opts, errors.New("the only command is `template`")
	}
	var positional []string
	for i := 1; i < len(args); i++ {
		arg := args[i]
		// Accept both `--flag value` and `--flag=value`, as Helm's command line does.
		name, inline, hasInline := strings.Cut(arg, "=")
		takesValue := map[string]bool{"-n": true, "--namespace": true, "-f": true, "--values": true,
			"--set": true, "--set-file": true, "--set-string": true, "--api-versions": true, "-a": true}
		if strings.HasPrefix(arg, "-") && takesValue[name] {
			value := inline
			if !hasInline {
				if i+1 >= len(args) {
					return opts, fmt.Errorf("flag %s needs a value", name)
				}
				i++
				value = args[i]
			}
			switch name {
			case "-n", "--namespace":
				opts.namespace = value
			case "-f", "--values":
				opts.valueFiles = append(opts.valueFiles, value)
			case "--set", "--set-string":
				opts.sets = append(opts.sets, value)
			case "--set-file":
				opts.setFiles = append(opts.setFiles, value)
			case "-a", "--api-versions":
				opts.apiVersions = append(opts.apiVersions, value)
			}
			continue
		}
		switch arg {
		case "--include-crds":
			opts.includeCRDs = true
		case "--notes":
			opts.notes = true
		default:
			if strings.HasPrefix(arg, "-") {
				return opts, fmt.Errorf("unknown flag %s", arg)
			}
			positional = append(positional, arg)
		}
	}
	if len(positional) != 2 {
		return opts, fmt.Errorf("expected RELEASE and CHART_DIR, got %d arguments", len(positional))
	}
	opts.release, opts.chartDir = positional[0], positional[1]
	return opts, nil
}

// chartMeta is Chart.yaml with the field names templates see under .Chart.
type chartMeta struct {
	APIVersion  string            `json:"apiVersion"`
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	AppVersion  string            `json:"appVersion"`
	Description string            `json:"description"`
	Type        string            `json:"type"`
	KubeVersion string            `json:"kubeVersion"`
	Home        string            `json:"home"`
	Sources     []string          `json:"sources"`
	Keywords    []string          `json:"keywords"`
	Annotations map[string]string `json:"annotations"`
}

// The template-facing view of chartMeta: Helm exposes the fields capitalised.
func (c chartMeta) view() map[string]interface{} {
	return map[string]interface{}{
		"APIVersion": c.APIVersion, "Name": c.Name, "Version": c.Version, "AppVersion": c.AppVersion,
		"Description": c.Description, "Type": c.Type, "KubeVersion": c.KubeVersion, "Home": c.Home,
		"Sources": c.Sources, "Keywords": c.Keywords, "Annotations": c.Annotations,
	}
}

// apiVersions is .Capabilities.APIVersions: a list with Has, as Helm's VersionSet.
type apiVersions []string

func (v apiVersions) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// The API versions of a Kubernetes 1.20 API server, the oldest the chart supports, which
// `helm template` would report without a cluster (its built-in defaults), plus --api-versions.
var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "batch/v1beta1", "policy/v1beta1", "autoscaling/v1", "autoscaling/v2beta2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "coordination.k8s.io/v1",
	"apiextensions.k8s.io/v1", "storage.k8s.io/v1", "admissionregistration.k8s.io/v1",
}

func render(opts options) (string, error) {
	chartFile := filepath.Join(opts.chartDir, "Chart.yaml")
	raw, err := os.ReadFile(chartFile)
	if err != nil {
		return "", fmt.Errorf("reading the chart: %v", err)
	}
	var meta chartMeta
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return "", fmt.Errorf("%s: %v", chartFile, err)
	}
	if meta.Name == "" || meta.Version == "" {
		return "", fmt.Errorf("%s: name and version are required", chartFile)
	}

	vals, err := loadValues(opts)
	if err != nil {
		return "", err
	}
	if err := validateSchema(opts.chartDir, meta.Name, vals); err != nil {
		return "", err
	}

	files, err := templateFiles(opts.chartDir, meta.Name)
	if err != nil {
		return "", err
	}
	root := template.New("gotpl")
	// Helm's default: a missing map key prints as nothing rather than failing.
	root.Option("missingkey=zero")
	root.Funcs(funcMap(root))
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := root.New(name).Parse(files[name]); err != nil {
			return "", cleanError(err)
		}
	}

	caps := map[string]interface{}{
		"KubeVersion": map[string]interface{}{"Version": "v1.20.0", "Major": "1", "Minor": "20", "GitVersion": "v1.20.0"},
		"APIVersions": apiVersions(append(append([]string{}, defaultAPIVersions...), opts.apiVersions...)),
		"HelmVersion": map[string]interface{}{"Version": "v3.11.0"},
	}
	release := map[string]interface{}{
		"Name": opts.release, "Namespace": opts.namespace, "Service": "Helm",
		"IsInstall": true, "IsUpgrade": false, "Revision": 1,
	}

	type manifest struct {
		source, body, kind string
		order              int
	}
	var manifests []manifest
	var notes string
	for i, name := range names {
		base := filepath.Base(name)
		if strings.HasPrefix(base, "_") {
			continue
		}
		data := map[string]interface{}{
			"Values": vals, "Release": release, "Chart": meta.view(), "Capabilities": caps,
			"Template": map[string]interface{}{"Name": name, "BasePath": meta.Name + "/templates"},
			"Files":    map[string]interface{}{},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", cleanError(err)
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		if base == "NOTES.txt" {
			notes = out
			continue
		}
		for _, doc := range splitManifests(out) {
			var head struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return "", fmt.Errorf("YAML parse error on %s: %v", name, err)
			}
			manifests = append(manifests, manifest{source: name, body: doc, kind: head.Kind, order: i})
		}
	}
	sort.SliceStable(manifests, func(a, b int) bool {
		ka, kb := kindRank(manifests[a].kind), kindRank(manifests[b].kind)
		if ka != kb {
			return ka < kb
		}
		return manifests[a].order < manifests[b].order
	})

	var out strings.Builder
	if opts.includeCRDs {
		crds, err := filepath.Glob(filepath.Join(opts.chartDir, "crds", "*.yaml"))
		if err != nil {
			return "", err
		}
		sort.Strings(crds)
		for _, crd := range crds {
			body, err := os.ReadFile(crd)
			if err != nil {
				return "", err
			}
			for _, doc := range splitManifests(string(body)) {
				fmt.Fprintf(&out, "---\n# Source: %s/crds/%s\n%s\n", meta.Name, filepath.Base(crd), doc)
			}
		}
	}
	for _, m := range manifests {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", m.source, m.body)
	}
	if opts.notes && strings.TrimSpace(notes) != "" {
		fmt.Fprintf(&out, "\nNOTES:\n%s\n", notes)
	}
	return out.String(), nil
}

// templateFiles reads every file under templates/, keyed by its name as Helm gives it
// (CHART/templates/PATH).
func templateFiles(chartDir, chartName string) (map[string]string, error) {
	files := map[string]string{}
	dir := filepath.Join(chartDir, "templates")
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		body, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[chartName+"/templates/"+filepath.ToSlash(rel)] = string(body)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the templates: %v", err)
	}
	return files, nil
}

var separator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitManifests splits rendered text into its non-empty YAML documents, as Helm's
// releaseutil.SplitManifests does (a document of only comments and blanks is dropped).
func splitManifests(text string) []string {
	var docs []string
	for _, part := range separator.Split(text, -1) {
		doc := strings.TrimSpace(part)
		meaningful := false
		for _, line := range strings.Split(doc, "\n") {
			l := strings.TrimSpace(line)
			if l != "" && !strings.HasPrefix(l, "#") {
				meaningful = true
				break
			}
		}
		if meaningful {
			docs = append(docs, doc)
		}
	}
	return docs
}

// Helm's InstallOrder (pkg/releaseutil/kind_sorter.go): what must exist first comes first.
var installOrder = []string{
	"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList",
	"RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController",
	"ReplicaSet", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob",
	"IngressClass", "Ingress", "APIService",
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	// Unknown kinds (custom resources such as ServiceMonitor) go last, as in Helm.
	return len(installOrder)
}

// cleanError drops the internal root template's name from text/template errors, so messages
// name the chart file the way Helm's do.
func cleanError(err error) error {
	return errors.New(strings.ReplaceAll(err.Error(), `template: gotpl:`, "template:"))
}

// ---- values ---------------------------------------------------------------------------------

func readYAMLMap(path string) (values, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vals := values{}
	// sigs.k8s.io/yaml goes through JSON, as Helm's chartutil.ReadValues does: numbers
	// become float64 and keys strings, exactly what templates see under Helm.
	if err := yaml.Unmarshal(raw, &vals); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if vals == nil {
		vals = values{}
	}
	return vals, nil
}

func loadValues(opts options) (values, error) {
	vals, err := readYAMLMap(filepath.Join(opts.chartDir, "values.yaml"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading the chart's values: %v", err)
	}
	if vals == nil {
		vals = values{}
	}
	for _, file := range opts.valueFiles {
		override, err := readYAMLMap(file)
		if err != nil {
			return nil, fmt.Errorf("reading values file: %v", err)
		}
		vals = coalesce(override, vals)
	}
	for _, set := range opts.sets {
		key, value, ok := strings.Cut(set, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("--set %q: expected KEY=VALUE", set)
		}
		if err := setPath(vals, key, parseScalar(value)); err != nil {
			return nil, fmt.Errorf("--set %q: %v", set, err)
		}
	}
	for _, set := range opts.setFiles {
		key, file, ok := strings.Cut(set, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("--set-file %q: expected KEY=FILE", set)
		}
		body, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--set-file %q: %v", set, err)
		}
		if err := setPath(vals, key, string(body)); err != nil {
			return nil, fmt.Errorf("--set-file %q: %v", set, err)
		}
	}
	return dropNulls(vals), nil
}

// coalesce merges src over dst: maps merge key by key, anything else is replaced.
func coalesce(src, dst values) values {
	out := values{}
	for k, v := range dst {
		out[k] = v
	}
	for k, v := range src {
		srcMap, srcIsMap := v.(map[string]interface{})
		dstMap, dstIsMap := out[k].(map[string]interface{})
		if srcIsMap && dstIsMap {
			out[k] = coalesce(srcMap, dstMap)
		} else {
			out[k] = v
		}
	}
	return out
}

// dropNulls removes keys set to null: in Helm, an override of null deletes a default.
func dropNulls(vals values) values {
	for k, v := range vals {
		if v == nil {
			delete(vals, k)
		} else if m, ok := v.(map[string]interface{}); ok {
			vals[k] = dropNulls(m)
		}
	}
	return vals
}

// parseScalar types a --set value as Helm's strvals does: integers, booleans and null.
func parseScalar(s string) interface{} {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	return s
}

// setPath sets a dotted key (a.b.c; `\.` escapes a dot in a key), creating maps on the way.
func setPath(vals values, key string, value interface{}) error {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		if key[i] == '\\' && i+1 < len(key) && key[i+1] == '.' {
			cur.WriteByte('.')
			i++
			continue
		}
		if key[i] == '.' {
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(key[i])
	}
	parts = append(parts, cur.String())
	m := vals
	for i, part := range parts {
		if part == "" {
			return fmt.Errorf("empty key segment in %q", key)
		}
		if i == len(parts)-1 {
			m[part] = value
			return nil
		}
		next, ok := m[part].(map[string]interface{})
		if !ok {
			if m[part] != nil {
				return fmt.Errorf("%s is not a map", strings.Join(parts[:i+1], "."))
			}
			next = values{}
			m[part] = next
		}
		m = next
	}
	return nil
}

// validateSchema checks the values against the chart's values.schema.json, with Helm's message.
func validateSchema(chartDir, chartName string, vals values) error {
	schema, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	}
	// Round-trip through JSON so the validator sees plain JSON types (int64 from --set too).
	doc, err := json.Marshal(vals)
	if err != nil {
		return err
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewBytesLoader(doc))
	if err != nil {
		return fmt.Errorf("%s/values.schema.json: %v", chartName, err)
	}
	if result.Valid() {
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n", chartName)
	for _, e := range result.Errors() {
		fmt.Fprintf(&sb, "- %s\n", e)
	}
	return errors.New(strings.TrimSuffix(sb.String(), "\n"))
}

// ---- functions ------------------------------------------------------------------------------

func funcMap(root *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	// Helm removes these so a chart cannot read the environment of whoever renders it.
	delete(f, "env")
	delete(f, "expandenv")

	f["toYaml"] = func(v interface{}) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			// Helm swallows the error here too; the empty output shows in the manifest.
			return ""
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	f["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromYamlArray"] = func(s string) []interface{} {
		var a []interface{}
		if err := yaml.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	f["toJson"] = func(v interface{}) string {
		out, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(out)
	}
	f["fromJson"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	// `helm template` has no cluster to look things up in: lookup returns an empty map.
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		// A clone keeps every named template of the chart visible to the snippet, as Helm's does.
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %v", text, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error calling tpl: %v", err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	return f
}
