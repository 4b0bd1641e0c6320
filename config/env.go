package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// EnvPrefix starts every environment override.
const EnvPrefix = "FERRY_"

// field is one leaf key of the configuration, found by walking Config's
// toml tags, so the environment names and the key list cannot drift from
// the struct.
type field struct {
	key   string // dotted TOML key, "federation.listen"
	env   string // FERRY_FEDERATION_LISTEN
	value reflect.Value
}

// fields lists every leaf key of cfg in declaration order.
func fields(cfg *Config) []field {
	var out []field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("toml")
			if tag == "" || tag == "-" {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct {
				walk(fv, key)
				continue
			}
			env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
			out = append(out, field{key: key, env: env, value: fv})
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "")
	return out
}

// Keys returns every dotted key the configuration knows, in file order.
func Keys() []string {
	var out []string
	for _, f := range fields(Default()) {
		out = append(out, f.key)
	}
	return out
}

// EnvName returns the environment variable that overrides the dotted key,
// or "" if the key is unknown.
func EnvName(key string) string {
	for _, f := range fields(Default()) {
		if f.key == key {
			return f.env
		}
	}
	return ""
}

// ApplyEnv overrides cfg with every FERRY_* variable env defines. A value
// that does not parse is an error naming the variable and its key.
func ApplyEnv(cfg *Config, env LookupEnv) error {
	var errs []error
	for _, f := range fields(cfg) {
		raw, ok := env(f.env)
		if !ok {
			continue
		}
		if err := setFromString(f.value, raw); err != nil {
			errs = append(errs, &FieldError{Key: f.key, Value: raw, Source: f.env, Err: err})
		}
	}
	return errors.Join(errs...)
}

func setFromString(v reflect.Value, raw string) error {
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("expected true or false")
		}
		v.SetBool(b)
	case reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return errors.New("expected an integer")
		}
		v.SetInt(n)
	case reflect.Slice:
		list := []string{}
		for item := range strings.SplitSeq(raw, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		v.Set(reflect.ValueOf(list))
	default:
		// Only reachable if a field of a new kind is added to Config
		// without teaching this function; the config test walks every
		// field through here.
		return fmt.Errorf("cannot set a %s from the environment", v.Kind())
	}
	return nil
}

// UnknownEnv returns the names of FERRY_* variables in environ (as
// os.Environ gives it) that match no key, so that a misspelt override is
// reported instead of silently doing nothing.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, f := range fields(Default()) {
		known[f.env] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !known[name] {
			out = append(out, name)
		}
	}
	return out
}
