package mail

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Environment variables read by LoadCredentials when neither a flag nor a file gives the value.
const (
	UsernameEnv = "SMTP_USERNAME"
	PasswordEnv = "SMTP_PASSWORD"
)

// LoadCredentials returns the SMTP username and password. The username is the
// --smtp-username value, or the content of usernameFile, or $SMTP_USERNAME (a
// username is not a secret; it may be a flag value); the password is the content
// of passwordFile, or $SMTP_PASSWORD, never a flag value, which would show in `ps`
// and in the pod spec. A file keeps its content except for trailing line
// breaks (other whitespace is part of the secret); a file that does not exist counts as unset, as a mounted Secret's
// optional key that is not there.
//
// Both empty means "no SMTP AUTH". One without the other is an error.
func LoadCredentials(username, usernameFile, passwordFile string) (string, string, error) {
	if username != "" && usernameFile != "" {
		return "", "", errors.New("SMTP credentials: set --smtp-username or --smtp-username-file, not both")
	}
	if username == "" {
		var err error
		if username, err = fromFileOrEnv(usernameFile, UsernameEnv); err != nil {
			return "", "", err
		}
	}
	password, err := fromFileOrEnv(passwordFile, PasswordEnv)
	if err != nil {
		return "", "", err
	}
	switch {
	case username == "" && password != "":
		return "", "", errors.New("SMTP credentials: a password but no username: set the username too " +
			"(--smtp-username, --smtp-username-file or $" + UsernameEnv + "), or neither")
	case username != "" && password == "":
		return "", "", errors.New("SMTP credentials: a username but no password: set the password too " +
			"(--smtp-password-file or $" + PasswordEnv + "; an empty or missing file counts as none), or neither")
	}
	return username, password, nil
}

func fromFileOrEnv(path, env string) (string, error) {
	if path == "" {
		return os.Getenv(env), nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading SMTP credential file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
