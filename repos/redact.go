package repos

import secret "github.com/sweepboard/release/pipeline/redact"

// redact and redactError keep a remote's or GitHub's token out of text
// that may quote what a server or proxy echoed back: as it is, URL-escaped
// or base64-encoded (a basic-auth header). See pipeline/redact.
func redact(text string, secrets ...string) string { return secret.String(text, secrets...) }

func redactError(err error, secrets ...string) error { return secret.Error(err, secrets...) }
