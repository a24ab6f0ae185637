package localcluster

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// WriteKubeconfig writes cfg as a kubeconfig file with a single context named
// name. Certificates and keys given as data are embedded; files and a bearer
// token file are referenced by absolute path, so that a rotated token is picked
// up by every client (client-go rereads token files).
func WriteKubeconfig(path string, cfg *rest.Config, name string) error {
	server, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return fmt.Errorf("server URL: %w", err)
	}
	cluster := &clientcmdapi.Cluster{
		Server:                   server.String(),
		CertificateAuthorityData: cfg.CAData,
		CertificateAuthority:     absPath(cfg.CAFile),
		InsecureSkipTLSVerify:    cfg.Insecure,
		TLSServerName:            cfg.ServerName,
	}
	user := &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientCertificate:     absPath(cfg.CertFile),
		ClientKeyData:         cfg.KeyData,
		ClientKey:             absPath(cfg.KeyFile),
		Token:                 cfg.BearerToken,
		TokenFile:             absPath(cfg.BearerTokenFile),
		Username:              cfg.Username,
		Password:              cfg.Password,
		Impersonate:           cfg.Impersonate.UserName,
		ImpersonateUID:        cfg.Impersonate.UID,
		ImpersonateGroups:     cfg.Impersonate.Groups,
		ImpersonateUserExtra:  cfg.Impersonate.Extra,
	}
	if cfg.BearerTokenFile != "" {
		user.Token = "" // the file wins: it is what gets rotated
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = cluster
	kc.AuthInfos[name] = user
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	data, err := clientcmd.Write(*kc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o600)
}

func absPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
