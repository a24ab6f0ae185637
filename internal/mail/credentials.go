package mail

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Environment variables read by LoadCredentials when no file is given.
const (
	UsernameEnv = "SMTP_USERNAME"
	PasswordEnv = "SMTP_PASSWORD"
)

// LoadCredentials returns the SMTP username and password, each from its file when
// the path is not empty (a mounted Secret; a trailing line break is dropped, other
// whitespace is kept as part of the secret), else from $SMTP_USERNAME / $SMTP_PASSWORD. Credentials never
// come from a flag value, which would show in `ps` and in the pod spec.
//
// Both empty means "no SMTP AUTH". A username without a password is an error.
func LoadCredentials(usernameFile, passwordFile string) (username, password string, err error) {
	username, err = fromFileOrEnv(usernameFile, UsernameEnv)
	if err != nil {
		return "", "", err
	}
	password, err = fromFileOrEnv(passwordFile, PasswordEnv)
	if err != nil {
		return "", "", err
	}
	if username == "" && password != "" || username != "" && password == "" {
		return "", "", errors.New("SMTP credentials: set both username and password, or neither")
	}
	return username, password, nil
}

func fromFileOrEnv(path, env string) (string, error) {
	if path == "" {
		return os.Getenv(env), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading SMTP credential file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
