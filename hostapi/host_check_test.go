package hostapi_test

import (
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/hostapi"
	"github.com/ferry-matrix/ferry/store"
)

// The homeserver's Host and store's DB are what the host API runs on in
// production; these make a drift between them and the interfaces a build
// error.
var (
	_ hostapi.Host    = (*homeserver.Host)(nil)
	_ hostapi.Cursors = (*store.DB)(nil)
)
