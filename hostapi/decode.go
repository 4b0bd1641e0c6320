package hostapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"

	"github.com/ferry-matrix/ferry/rooms"
)

// decodeBody reads the request body, which must be one JSON value, into
// dst (a pointer to a request struct). A body that is not JSON is
// M_NOT_JSON; JSON of the wrong shape (not an object, a field of the
// wrong type) is M_BAD_JSON; unknown fields are ignored so that older
// servers accept newer clients. Numbers are kept exact (json.Number) for
// checkContent.
func decodeBody(r *http.Request, dst any) error {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		// A *http.MaxBytesError becomes 413 in errorFor.
		return fmt.Errorf("read request body: %w", err)
	}
	if !json.Valid(data) {
		return errorf(http.StatusBadRequest, codeNotJSON, "request body is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			if typeErr.Field == "" {
				return badJSON("request body must be a JSON object")
			}
			return badJSON("field %q must be %s, not %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value)
		}
		return badJSON("request body: %v", err)
	}
	return nil
}

// jsonKind names the JSON type a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "of another type"
}

// required returns the value of a required string field, or M_BAD_JSON
// when it is absent or null.
func required(field string, v *string) (string, error) {
	if v == nil {
		return "", badJSON("missing required field %q", field)
	}
	return *v, nil
}

// checkContent checks event content decoded with json.Number and turns
// its numbers into int64 values, the number type the event builder's
// canonical JSON encoder takes. Canonical JSON, which signs every event,
// allows only integers in [-(2^53-1), 2^53-1], so anything else is
// refused here rather than deep inside the engine.
func checkContent(field string, content map[string]any) (map[string]any, error) {
	if content == nil {
		return nil, badJSON("missing required field %q (an object)", field)
	}
	for k, v := range content {
		fixed, err := checkValue(field+"."+k, v)
		if err != nil {
			return nil, err
		}
		content[k] = fixed
	}
	return content, nil
}

func checkValue(path string, v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n > rooms.MaxSafeInteger || n < -rooms.MaxSafeInteger {
			return nil, badJSON("%s: %s is not an integer in [-(2^53-1), 2^53-1], the only numbers events may hold", path, v)
		}
		return n, nil
	case map[string]any:
		for k, e := range v {
			fixed, err := checkValue(path+"."+k, e)
			if err != nil {
				return nil, err
			}
			v[k] = fixed
		}
		return v, nil
	case []any:
		for i, e := range v {
			fixed, err := checkValue(fmt.Sprintf("%s[%d]", path, i), e)
			if err != nil {
				return nil, err
			}
			v[i] = fixed
		}
		return v, nil
	}
	return v, nil
}
