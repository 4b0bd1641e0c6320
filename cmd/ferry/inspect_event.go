package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/ferry-matrix/ferry/rooms"
)

func init() {
	registerInspectTool("event", "check one PDU: format, size, event ID, hashes, redaction, signatures", runInspectEvent)
}

// maxInspectEventInput bounds what `ferry inspect event` reads: well above
// the 64 KiB event limit, so oversized events are reported, not cut.
const maxInspectEventInput = 4 << 20

// Signature verdicts reported per server and key.
const (
	sigVerdictValid   = "valid"
	sigVerdictInvalid = "invalid"
	sigVerdictUnknown = "unknown"
)

// inspectEventReport is the JSON `ferry inspect event` prints.
type inspectEventReport struct {
	RoomVersion        string          `json:"room_version,omitempty"`
	RoomVersionLabel   string          `json:"room_version_label,omitempty"`
	EventID            string          `json:"event_id,omitempty"`
	RoomID             string          `json:"room_id,omitempty"`
	SizeBytes          int             `json:"size_bytes"`
	ContentHash        string          `json:"content_hash,omitempty"`
	ContentHashClaimed string          `json:"content_hash_claimed,omitempty"`
	ContentHashValid   bool            `json:"content_hash_valid"`
	Redacted           json.RawMessage `json:"redacted,omitempty"`
	Errors             []string        `json:"errors"`
	// RequiredSigners are the servers whose signatures the spec requires.
	RequiredSigners []string `json:"required_signers,omitempty"`
	// Signatures maps server → key ID → valid/invalid/unknown (--keys).
	Signatures map[string]map[string]string `json:"signatures,omitempty"`
	// SignatureCheck is "ok" or why the event's signatures fail (--keys).
	SignatureCheck string `json:"signature_check,omitempty"`
}

func runInspectEvent(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry inspect event", flag.ContinueOnError)
	fs.SetOutput(stderr)
	versionFlag := fs.String("room-version", "", "room version of the event: "+supportedVersionsText()+" (default: content.room_version of a create event)")
	keysFlag := fs.String("keys", "", "JSON file of {server: {key_id: base64 public key}} to check signatures with")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry inspect event [--room-version V] [--keys FILE] < event.json")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Reads one PDU (federation format) and prints what Ferry makes of it: event_id,")
		fmt.Fprintln(stderr, "room_id, size_bytes, the computed content_hash and whether it matches,")
		fmt.Fprintln(stderr, "the redacted event, and every format rule it breaks (errors). With --keys")
		fmt.Fprintln(stderr, "it also checks each signature (valid, invalid, or unknown key) and runs the")
		fmt.Fprintln(stderr, "spec's signature check. Exit status: 0 if the event passes every check,")
		fmt.Fprintln(stderr, "1 if it fails one, 2 for a usage or input problem.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "ferry inspect event: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	var keys map[string]map[string]ed25519.PublicKey
	if *keysFlag != "" {
		var err error
		if keys, err = loadInspectKeys(*keysFlag); err != nil {
			fmt.Fprintf(stderr, "ferry inspect event: --keys: %v\n", err)
			return 2
		}
	}
	data, err := io.ReadAll(io.LimitReader(stdin, maxInspectEventInput+1))
	if err != nil {
		fmt.Fprintf(stderr, "ferry inspect event: read input: %v\n", err)
		return 2
	}
	if len(data) > maxInspectEventInput {
		fmt.Fprintf(stderr, "ferry inspect event: input is more than %d bytes\n", maxInspectEventInput)
		return 2
	}
	report, err := inspectEvent(data, *versionFlag, keys)
	if err != nil {
		fmt.Fprintf(stderr, "ferry inspect event: %v\n", err)
		return 2
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(report); err != nil {
		fmt.Fprintf(stderr, "ferry inspect event: %v\n", err)
		return 2
	}
	if _, err := stdout.Write(buf.Bytes()); err != nil {
		return 2
	}
	if len(report.Errors) > 0 || !report.ContentHashValid || (keys != nil && report.SignatureCheck != "ok") {
		return 1
	}
	return 0
}

func supportedVersionsText() string {
	var b bytes.Buffer
	for i, v := range rooms.SupportedVersions() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(v.String())
	}
	return b.String()
}

// loadInspectKeys reads a {server: {key_id: base64 public key}} file.
func loadInspectKeys(path string) (map[string]map[string]ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]map[string]string
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: want {\"server\": {\"ed25519:id\": \"base64 key\"}}: %w", path, err)
	}
	out := make(map[string]map[string]ed25519.PublicKey, len(raw))
	for server, byID := range raw {
		out[server] = make(map[string]ed25519.PublicKey, len(byID))
		for keyID, b64 := range byID {
			pub, err := rooms.DecodeBase64(b64)
			if err != nil || len(pub) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("%s: key %s of %s is not a base64 32-byte ed25519 public key", path, keyID, server)
			}
			out[server][keyID] = ed25519.PublicKey(pub)
		}
	}
	return out, nil
}

// inspectKeys is a rooms.KeyLookup over the --keys file; the file has no
// validity periods, so every listed key counts as valid at any time.
type inspectKeys map[string]map[string]ed25519.PublicKey

func (k inspectKeys) VerifyKey(server, keyID string, ts int64) (ed25519.PublicKey, error) {
	pub, ok := k[server][keyID]
	if !ok {
		return nil, fmt.Errorf("key %s of %s is not in the --keys file", keyID, server)
	}
	return pub, nil
}

var _ rooms.KeyLookup = inspectKeys(nil)

// inspectEvent builds the report. Only problems with the invocation are
// returned as errors; everything wrong with the event goes into the
// report, and as much is computed as the event allows.
func inspectEvent(data []byte, versionID string, keys map[string]map[string]ed25519.PublicKey) (*inspectEventReport, error) {
	report := &inspectEventReport{Errors: []string{}}
	tree, err := rooms.ParseJSON(data)
	if err != nil {
		report.Errors = append(report.Errors, "json: "+err.Error())
		// Read on leniently, so the rest of the report can still help.
		if tree, err = rooms.ParseJSONLenient(data); err != nil {
			return report, nil
		}
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		report.Errors = append(report.Errors, "json: the event is not a JSON object")
		return report, nil
	}
	v, err := inspectVersion(obj, versionID)
	if err != nil {
		return nil, err
	}
	report.RoomVersion, report.RoomVersionLabel = v.ID, v.String()
	canonical, err := rooms.EncodeCanonical(obj)
	if err != nil {
		report.Errors = append(report.Errors, "json: "+err.Error())
		return report, nil
	}
	report.SizeBytes = len(canonical)
	report.Errors = append(report.Errors, rooms.CheckEventFormat(v, obj, len(canonical))...)
	if ref, err := rooms.ReferenceHash(v, obj); err == nil {
		report.EventID = "$" + rooms.EncodeBase64URL(ref[:])
	}
	report.RoomID, _ = obj["room_id"].(string)
	if typ, _ := obj["type"].(string); report.RoomID == "" && typ == "m.room.create" && v.RoomIDs == rooms.RoomIDFromCreate && report.EventID != "" {
		report.RoomID = string(rooms.RoomIDFromCreateEventID(rooms.EventID(report.EventID)))
	}
	if h, err := rooms.ContentHash(obj); err == nil {
		report.ContentHash = rooms.EncodeBase64(h[:])
		hashes, _ := obj["hashes"].(map[string]any)
		report.ContentHashClaimed, _ = hashes["sha256"].(string)
		claimed, err := rooms.DecodeBase64(report.ContentHashClaimed)
		report.ContentHashValid = err == nil && bytes.Equal(claimed, h[:])
	}
	redacted := rooms.Redact(v, obj)
	if b, err := rooms.EncodeCanonical(redacted); err == nil {
		report.Redacted = b
	}
	ev, parseErr := rooms.NewEventFromObject(v, obj)
	if parseErr == nil {
		report.RequiredSigners = ev.RequiredSigners()
	}
	if keys != nil {
		report.Signatures = signatureVerdicts(redacted, keys)
		switch {
		case parseErr != nil:
			report.SignatureCheck = "not run: the event breaks the format rules listed in errors"
		default:
			if err := rooms.VerifyEventSignatures(ev, inspectKeys(keys)); err != nil {
				report.SignatureCheck = err.Error()
			} else {
				report.SignatureCheck = "ok"
			}
		}
	}
	return report, nil
}

// inspectVersion picks the room version: the flag, or the room_version of
// a create event.
func inspectVersion(obj map[string]any, versionID string) (rooms.Version, error) {
	if versionID == "" {
		content, _ := obj["content"].(map[string]any)
		typ, _ := obj["type"].(string)
		named, ok := content["room_version"].(string)
		if typ != "m.room.create" || !ok {
			return rooms.Version{}, fmt.Errorf("--room-version is needed (%s): only a create event names its room's version", supportedVersionsText())
		}
		versionID = named
	}
	v, err := rooms.LookupVersion(versionID)
	if err != nil {
		return rooms.Version{}, fmt.Errorf("room version: %w", err)
	}
	return v, nil
}

// signatureVerdicts checks every signature the redacted event carries
// against the keys given: valid, invalid, or unknown when the key (or its
// algorithm) is not in the file.
func signatureVerdicts(redacted map[string]any, keys map[string]map[string]ed25519.PublicKey) map[string]map[string]string {
	sigs, _ := redacted["signatures"].(map[string]any)
	servers := make([]string, 0, len(sigs))
	for server := range sigs {
		servers = append(servers, server)
	}
	sort.Strings(servers)
	out := make(map[string]map[string]string, len(servers))
	for _, server := range servers {
		out[server] = map[string]string{}
		entity, _ := sigs[server].(map[string]any)
		for keyID := range entity {
			pub, known := keys[server][keyID]
			switch {
			case !known || !rooms.IsEd25519KeyID(keyID):
				out[server][keyID] = sigVerdictUnknown
			case rooms.VerifyJSONSignature(redacted, server, keyID, pub) == nil:
				out[server][keyID] = sigVerdictValid
			default:
				out[server][keyID] = sigVerdictInvalid
			}
		}
	}
	return out
}
