package mail

import (
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
)

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	user, password := file("username", "mailer\n"), file("password", " s3cret \r\n")
	missing := filepath.Join(dir, "absent")

	tests := []struct {
		name                       string
		flag, userFile, passFile   string
		env                        map[string]string
		wantUser, wantPass, errHas string
	}{
		{name: "from files, trailing line breaks dropped, other whitespace kept",
			userFile: user, passFile: password, wantUser: "mailer", wantPass: " s3cret "},
		{name: "the username as a flag value", flag: "ops@example.com", passFile: password,
			wantUser: "ops@example.com", wantPass: " s3cret "},
		{name: "from the environment", env: map[string]string{UsernameEnv: "env-user", PasswordEnv: "env-pass"},
			wantUser: "env-user", wantPass: "env-pass"},
		{name: "a file wins over the environment", passFile: password,
			env: map[string]string{UsernameEnv: "env-user", PasswordEnv: "env-pass"}, wantUser: "env-user", wantPass: " s3cret "},
		{name: "neither: no SMTP AUTH"},
		{name: "a missing password file counts as unset (an optional Secret key), so no AUTH", passFile: missing},
		{name: "a missing password file with a username", flag: "ops", passFile: missing,
			errHas: "a username but no password"},
		{name: "a password without a username", passFile: password, errHas: "a password but no username"},
		{name: "both username flags", flag: "ops", userFile: user, passFile: password,
			errHas: "--smtp-username or --smtp-username-file, not both"},
		{name: "an unreadable file", passFile: dir, errHas: "reading SMTP credential file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			t.Setenv(UsernameEnv, tt.env[UsernameEnv])
			t.Setenv(PasswordEnv, tt.env[PasswordEnv])
			gotUser, gotPass, err := LoadCredentials(tt.flag, tt.userFile, tt.passFile)
			if tt.errHas != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.errHas)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(gotUser).To(Equal(tt.wantUser))
			g.Expect(gotPass).To(Equal(tt.wantPass))
		})
	}
}
