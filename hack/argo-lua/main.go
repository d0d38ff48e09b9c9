// Command argo-lua runs an Argo CD resource customization (health.lua, actions/discovery.lua,
// actions/*/action.lua) against its test files (health_test.yaml, actions/action_test.yaml) in
// gopher-lua, the Lua runtime Argo CD itself uses, set up as Argo CD sets it up (argo-cd
// util/lua/lua.go, oslib_safe.go):
//
//   - a fresh lua.LState per run with SkipOpenLibs, then only the package, base and table
//     libraries and Argo's "safe" os (time and date only, also behind require("os")): no string,
//     math or io library, so `s:upper()` fails here as it fails in Argo CD;
//   - `obj` is a global built from the object as Argo decodes it (maps become tables with string
//     keys, lists 1-based tables, null nil);
//   - a 1-second timeout on the script;
//   - the returned table is encoded with layeh.com/gopher-json and decoded as Argo does: a health
//     table into {status, message}, an unknown status becoming Unknown with Argo's message; an
//     action's object through Argo's cleanReturnedObj (an empty array where the input held an
//     object becomes that object again); discovery into Argo's ResourceAction fields.
//
// Test data is read with sigs.k8s.io/yaml, as Argo CD's own tests read it. Time is frozen at
// $ARGO_LUA_NOW (Unix seconds; default 2026-01-02T03:04:05Z) so actions that stamp a time have a
// fixed expected output.
//
// Usage: argo-lua <customization dir>   (e.g. argocd/datamigration.dev/DataMigration)
// Prints one line per case ("ok" or "FAIL" with the difference), then a summary line; exits 1 if
// any case failed, 2 on a usage or file error.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

const invalidHealthStatus = "Lua returned an invalid health status"

// Argo CD's health status codes (gitops-engine pkg/health).
var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true,
	"Missing": true, "Unknown": true,
}

var now = time.Unix(1767323045, 0).UTC()

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// resourceAction holds the fields of Argo CD's appv1.ResourceAction that a discovery returns.
type resourceAction struct {
	Name        string `json:"name,omitempty"`
	Disabled    bool   `json:"disabled,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
	IconClass   string `json:"iconClass,omitempty"`
	Params      []any  `json:"params,omitempty"`
}

type healthTests struct {
	Tests []struct {
		HealthStatus healthStatus `json:"healthStatus"`
		InputPath    string       `json:"inputPath"`
	} `json:"tests"`
}

type actionTests struct {
	DiscoveryTests []struct {
		InputPath string           `json:"inputPath"`
		Result    []resourceAction `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action             string `json:"action"`
		InputPath          string `json:"inputPath"`
		ExpectedOutputPath string `json:"expectedOutputPath"`
	} `json:"actionTests"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argo-lua <customization dir>")
		os.Exit(2)
	}
	if v := os.Getenv("ARGO_LUA_NOW"); v != "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			fail2("ARGO_LUA_NOW: %v", err)
		}
		now = time.Unix(secs, 0).UTC()
	}
	dir := os.Args[1]
	passed, failed := 0, 0
	report := func(name string, err error) {
		if err != nil {
			failed++
			fmt.Printf("FAIL %s: %v\n", name, err)
			return
		}
		passed++
		fmt.Printf("ok   %s\n", name)
	}

	var ht healthTests
	mustLoad(filepath.Join(dir, "health_test.yaml"), &ht)
	healthLua := mustRead(filepath.Join(dir, "health.lua"))
	for _, tc := range ht.Tests {
		name := "health " + tc.InputPath
		got, err := executeHealth(loadObj(filepath.Join(dir, tc.InputPath)), healthLua)
		if err == nil && !reflect.DeepEqual(got, tc.HealthStatus) {
			err = fmt.Errorf("got %+v, want %+v", got, tc.HealthStatus)
		}
		report(name, err)
	}

	actions := filepath.Join(dir, "actions")
	var at actionTests
	mustLoad(filepath.Join(actions, "action_test.yaml"), &at)
	discoveryLua := mustRead(filepath.Join(actions, "discovery.lua"))
	for _, tc := range at.DiscoveryTests {
		name := "discovery " + tc.InputPath
		got, err := executeDiscovery(loadObj(filepath.Join(actions, tc.InputPath)), discoveryLua)
		if err == nil {
			err = sameActions(got, tc.Result)
		}
		report(name, err)
	}
	for _, tc := range at.ActionTests {
		name := "action " + tc.Action + " " + tc.InputPath
		script := mustRead(filepath.Join(actions, tc.Action, "action.lua"))
		got, err := executeAction(loadObj(filepath.Join(actions, tc.InputPath)), script)
		if err == nil {
			want := loadObj(filepath.Join(actions, tc.ExpectedOutputPath))
			if !reflect.DeepEqual(normalise(got), normalise(want)) {
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				err = fmt.Errorf("got %s\n     want %s", g, w)
			}
		}
		report(name, err)
	}
	fmt.Printf("gopher-lua %s: %d passed, %d failed\n", lua.PackageVersion, passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}

// runLua is Argo CD's VM.runLua with UseOpenLibs false.
func runLua(obj map[string]any, script string) (*lua.LState, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(pair.f), NRet: 0, Protect: true},
			lua.LString(pair.n)); err != nil {
			panic(err)
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	err := l.DoString(script)
	return l, err
}

func executeHealth(obj map[string]any, script string) (healthStatus, error) {
	l, err := runLua(obj, script)
	if err != nil {
		return healthStatus{}, err
	}
	defer l.Close()
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return healthStatus{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	data, err := luajson.Encode(ret)
	if err != nil {
		return healthStatus{}, err
	}
	var hs healthStatus
	if err := json.Unmarshal(data, &hs); err != nil {
		return healthStatus{}, err
	}
	if !healthCodes[hs.Status] {
		return healthStatus{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return hs, nil
}

func executeDiscovery(obj map[string]any, script string) ([]resourceAction, error) {
	l, err := runLua(obj, script)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("discovery must return a table, not %s", ret.Type())
	}
	data, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	found := map[string]any{}
	if err := json.Unmarshal(data, &found); err != nil {
		return nil, fmt.Errorf("discovery result is not a table of actions: %w", err)
	}
	var out []resourceAction
	for name, value := range found {
		action := resourceAction{}
		raw, _ := json.Marshal(value)
		if err := json.Unmarshal(raw, &action); err != nil {
			return nil, fmt.Errorf("action %s: %w", name, err)
		}
		action.Name = name
		out = append(out, action)
	}
	return out, nil
}

func executeAction(obj map[string]any, script string) (map[string]any, error) {
	l, err := runLua(obj, script)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("an action must return a table, not %s", ret.Type())
	}
	data, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(strings.TrimSpace(string(data)), "[") {
		return nil, fmt.Errorf("the action returned a list (impacted resources): not what these actions do")
	}
	newObj := map[string]any{}
	if err := json.Unmarshal(data, &newObj); err != nil {
		return nil, err
	}
	return cleanReturnedObj(newObj, obj), nil
}

// sameActions compares discovered actions with the expected ones, by name (Argo CD collects
// them from a map, so their order is not defined).
func sameActions(got, want []resourceAction) error {
	index := map[string]resourceAction{}
	for _, a := range got {
		index[a.Name] = a
	}
	if len(got) != len(want) {
		return fmt.Errorf("got %d actions %+v, want %d %+v", len(got), got, len(want), want)
	}
	for _, w := range want {
		g, ok := index[w.Name]
		if !ok {
			return fmt.Errorf("action %s not discovered (got %+v)", w.Name, got)
		}
		if !reflect.DeepEqual(normalise(g), normalise(w)) {
			return fmt.Errorf("action %s: got %+v, want %+v", w.Name, g, w)
		}
	}
	return nil
}

// decodeValue is Argo CD's: Go data as Lua values.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetString(key, decodeValue(l, item))
		}
		return tbl
	case []any:
		tbl := l.CreateTable(len(v), 0)
		for i, item := range v {
			tbl.RawSetInt(i+1, decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// cleanReturnedObj is Argo CD's: Lua cannot tell an empty object from an empty array, and
// gopher-json encodes an empty table as an empty array.
func cleanReturnedObj(newObj, obj map[string]any) map[string]any {
	out := newObj
	for key := range obj {
		newValue, ok := newObj[key]
		if !ok {
			continue
		}
		switch nv := newValue.(type) {
		case map[string]any:
			if ov, ok := obj[key].(map[string]any); ok {
				out[key] = cleanReturnedObj(nv, ov)
			}
		case []any:
			switch ov := obj[key].(type) {
			case map[string]any:
				if len(nv) == 0 {
					out[key] = ov
				}
			case []any:
				out[key] = cleanReturnedArray(nv, ov)
			}
		}
	}
	return out
}

func cleanReturnedArray(newArr, arr []any) []any {
	out := newArr
	for i := range newArr {
		if i >= len(arr) {
			break
		}
		switch nv := newArr[i].(type) {
		case map[string]any:
			if ov, ok := arr[i].(map[string]any); ok {
				out[i] = cleanReturnedObj(nv, ov)
			}
		case []any:
			if ov, ok := arr[i].([]any); ok {
				out[i] = cleanReturnedArray(nv, ov)
			}
		}
	}
	return out
}

// -- Argo CD's safe os library: time and date only ------------------------------------------

func safeOsLoader(l *lua.LState) int {
	mod := l.SetFuncs(l.NewTable(), safeOsFuncs)
	l.Push(mod)
	return 1
}

func openSafeOs(l *lua.LState) int {
	mod := l.RegisterModule(lua.OsLibName, safeOsFuncs)
	l.Push(mod)
	return 1
}

var safeOsFuncs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(now.Unix()))
		return 1
	}
	tbl := l.CheckTable(1)
	field := func(key string, def int) int {
		v := tbl.RawGetString(key)
		if n, ok := v.(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	t := time.Date(field("year", 1970), time.Month(field("month", 1)), field("day", 1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

func osDate(l *lua.LState) int {
	t := now.Local()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if strings.HasPrefix(format, "!") {
			t = now.UTC()
			format = strings.TrimLeft(format, "!")
		}
		if l.GetTop() >= 2 {
			t = time.Unix(l.CheckInt64(2), 0)
		}
	}
	if strings.HasPrefix(format, "*t") {
		tbl := l.NewTable()
		for k, v := range map[string]int{
			"year": t.Year(), "month": int(t.Month()), "day": t.Day(), "hour": t.Hour(),
			"min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": t.YearDay(),
		} {
			tbl.RawSetString(k, lua.LNumber(v))
		}
		tbl.RawSetString("isdst", lua.LFalse)
		l.Push(tbl)
		return 1
	}
	s, err := strftime(t, format)
	if err != nil {
		l.RaiseError("%s", err.Error())
	}
	l.Push(lua.LString(s))
	return 1
}

// strftime supports the conversions of gopher-lua's os.date; anything else is an error here,
// so a script relying on one would be noticed.
func strftime(t time.Time, format string) (string, error) {
	conversions := map[byte]string{
		'a': "Mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "Mon Jan  2 15:04:05 2006",
		'd': "02", 'H': "15", 'I': "03", 'm': "01", 'M': "04", 'p': "PM", 'S': "05",
		'x': "01/02/06", 'X': "15:04:05", 'y': "06", 'Y': "2006", 'Z': "MST",
	}
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch d := format[i]; d {
		case '%':
			b.WriteByte('%')
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 'w':
			fmt.Fprintf(&b, "%d", int(t.Weekday()))
		default:
			layout, ok := conversions[d]
			if !ok {
				return "", fmt.Errorf("os.date: unsupported conversion %%%c", d)
			}
			b.WriteString(t.Format(layout))
		}
	}
	return b.String(), nil
}

// -- files --------------------------------------------------------------------------------

func normalise(v any) any {
	data, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(data, &out)
	return out
}

func loadObj(path string) map[string]any {
	obj := map[string]any{}
	mustLoad(path, &obj)
	return obj
}

func mustLoad(path string, into any) {
	if err := yaml.Unmarshal([]byte(mustRead(path)), into); err != nil {
		fail2("%s: %v", path, err)
	}
}

func mustRead(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		fail2("%v", err)
	}
	return string(data)
}

func fail2(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argo-lua: "+format+"\n", args...)
	os.Exit(2)
}
