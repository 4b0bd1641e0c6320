// Package config is Ferry's configuration: the Config struct with its
// defaults, one TOML file, FERRY_* environment overrides, validation with
// messages that name the offending key, and the commented template that
// `ferry init` writes.
//
// Only cmd/ferry imports this package. It copies the values it needs into
// each component's constructor fields, so no other package depends on the
// shape of the configuration file.
//
// # Precedence
//
// Defaults, then the file, then the environment: FERRY_<SECTION>_<KEY> for
// keys in a section (FERRY_FEDERATION_LISTEN) and FERRY_<KEY> for top-level
// keys (FERRY_SERVER_NAME). Booleans take true/false/1/0; lists are
// comma-separated.
package config
