package federation

import "context"

// PDUTreeReceiver is implemented by room handlers that can take a
// transaction's PDUs with the JSON trees the X-Matrix check already
// parsed the request body into, so that no PDU is parsed twice.
type PDUTreeReceiver interface {
	// ReceivePDUTrees is ReceivePDUs where trees[i] is pdus[i] as
	// rooms.ParseJSON parses it (strictly), or nil when not at hand. The
	// handler takes the trees over.
	ReceivePDUTrees(ctx context.Context, origin string, pdus [][]byte, trees []any) map[string]error
}

// pduTrees returns the parsed PDUs of a transaction body (content, as
// rooms.ParseJSON returns it), n of them, or nil when the body does not
// hold exactly n in its "pdus" array.
func pduTrees(content any, n int) []any {
	obj, _ := content.(map[string]any)
	list, _ := obj["pdus"].([]any)
	if len(list) != n {
		return nil
	}
	return list
}
