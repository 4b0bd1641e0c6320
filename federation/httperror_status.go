package federation

// HTTPStatus is the status the destination answered with; other packages
// (the host plane) read it through a one-method interface rather than by
// importing this one.
func (e *HTTPError) HTTPStatus() int { return e.Status }
