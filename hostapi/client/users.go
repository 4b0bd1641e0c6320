package client

import "context"

// User is a registered local user.
type User struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// UserProfile is the body of PUT /users/{userId}.
type UserProfile struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// PutUser registers the local user userID, or updates its profile.
func (c *Client) PutUser(ctx context.Context, userID string, profile UserProfile) (User, error) {
	var out User
	err := c.do(ctx, "PUT", route("users", userID), nil, profile, &out)
	return out, err
}

// User returns the registered local user userID (M_NOT_FOUND if none).
func (c *Client) User(ctx context.Context, userID string) (User, error) {
	var out User
	err := c.do(ctx, "GET", route("users", userID), nil, nil, &out)
	return out, err
}

// Users lists the registered local users.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var out struct {
		Users []User `json:"users"`
	}
	err := c.do(ctx, "GET", route("users"), nil, nil, &out)
	return out.Users, err
}

// DeleteUser makes the user leave its rooms and deletes it.
func (c *Client) DeleteUser(ctx context.Context, userID string) error {
	return c.do(ctx, "DELETE", route("users", userID), nil, nil, nil)
}
