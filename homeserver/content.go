package homeserver

import (
	"encoding/json"
	"math"
	"strconv"
)

// maxSafeInteger is the largest integer canonical JSON allows
// (2^53 - 1): the spec's range for numbers in events.
const maxSafeInteger = 1<<53 - 1

// normalizeContent returns a copy of content with every number as an
// int64, the only numbers canonical JSON admits. Programs that decoded
// their content with encoding/json hold float64s (or json.Numbers); an
// integral value in range is accepted as the integer it is, anything else
// (a fraction, NaN, out of range) is refused as malformed content.
func normalizeContent(content map[string]any) (map[string]any, error) {
	out, err := normalizeValue(content)
	if err != nil {
		return nil, err
	}
	return out.(map[string]any), nil
}

func normalizeValue(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			n, err := normalizeValue(val)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			n, err := normalizeValue(val)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case float64:
		if math.Trunc(x) != x || math.Abs(x) > maxSafeInteger {
			return nil, withCode(KindBadRequest, "M_BAD_JSON", "content: %v is not an integer in [-(2^53-1), 2^53-1]; events hold integers only", x)
		}
		return int64(x), nil
	case float32:
		return normalizeValue(float64(x))
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || n > maxSafeInteger || n < -maxSafeInteger {
			return nil, withCode(KindBadRequest, "M_BAD_JSON", "content: %s is not an integer in [-(2^53-1), 2^53-1]; events hold integers only", x)
		}
		return n, nil
	case int:
		return normalizeValue(int64(x))
	case int64:
		if x > maxSafeInteger || x < -maxSafeInteger {
			return nil, withCode(KindBadRequest, "M_BAD_JSON", "content: %d is outside [-(2^53-1), 2^53-1]", x)
		}
		return x, nil
	case int32:
		return int64(x), nil
	default:
		return v, nil
	}
}
