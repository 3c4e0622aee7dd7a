package score

// Event is one user activity, as the original producer writes it:
// {"user_id": 1234, "activity": "profile.view"}.
type Event struct {
	UserID   int64  `json:"user_id"`
	Activity string `json:"activity"`
}
