package hostapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// sseFrame is one Server-Sent Event, or a comment when comment is set.
type sseFrame struct {
	id, event, data string
	comment         string
}

// sseStream reads frames from an event stream response.
type sseStream struct {
	resp *http.Response
	r    *bufio.Reader
}

// openStream connects to the event stream of the server at base. since
// and lastEventID are left out when empty.
func openStream(ctx context.Context, base, since, lastEventID string) (*sseStream, error) {
	target := base + "/_ferry/v1/events"
	if since != "" {
		target += "?since=" + since
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("event stream: status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		resp.Body.Close()
		return nil, fmt.Errorf("event stream: content type %q", ct)
	}
	return &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}, nil
}

func (s *sseStream) close() { s.resp.Body.Close() }

// next reads the next frame; io.EOF when the server ended the stream.
func (s *sseStream) next() (sseFrame, error) {
	var f sseFrame
	started := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && (started || line != "") {
				return f, io.ErrUnexpectedEOF
			}
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if started {
				return f, nil
			}
			continue
		}
		started = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			f.comment = value
		case "id":
			f.id = value
		case "event":
			f.event = value
		case "data":
			f.data += value
		}
	}
}

// nextItem reads frames up to the next item, skipping comments.
func (s *sseStream) nextItem() (sseFrame, streamItem, error) {
	for {
		f, err := s.next()
		if err != nil {
			return f, streamItem{}, err
		}
		if f.comment != "" && f.id == "" && f.data == "" {
			continue
		}
		var it streamItem
		if err := json.Unmarshal([]byte(f.data), &it); err != nil {
			return f, it, fmt.Errorf("frame %q: %w", f.data, err)
		}
		return f, it, nil
	}
}
