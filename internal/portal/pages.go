package portal

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"html/template"
	"net/http"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

//go:embed templates/pages.html.tmpl
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/pages.html.tmpl"))

// pageCSS is the only style of the pages, inline so the portal needs no assets.
const pageCSS = `
:root { color-scheme: light dark; --fg: #1f2328; --muted: #59636e; --bg: #f4f5f7; --card: #fff; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --card: #161b22; --accent: #4493f8; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 48px 16px; background: var(--bg); color: var(--fg);
  font: 16px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
.card { max-width: 560px; margin: 0 auto; padding: 32px; background: var(--card); border-radius: 8px;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); }
h1 { font-size: 24px; margin: 0 0 16px; }
h2 { font-size: 18px; margin: 24px 0 8px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 8px 16px; margin: 0 0 24px; }
dt { color: var(--muted); }
dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.hint { color: var(--muted); font-size: 14px; font-weight: normal; }
button { padding: 12px 20px; font: inherit; font-weight: 600; color: #fff; background: var(--accent);
  border: 0; border-radius: 6px; cursor: pointer; }
button:focus-visible { outline: 3px solid var(--fg); outline-offset: 2px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 14px; overflow-wrap: anywhere; }
li { margin: 0 0 8px; }
`

// contentSecurityPolicy allows nothing but the inline style above (by hash, not
// 'unsafe-inline') and a form posting back to the portal: no scripts, frames,
// images or fonts, so injected markup could do nothing.
var contentSecurityPolicy = "default-src 'none'; style-src 'sha256-" + hashCSS(pageCSS) +
	"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func hashCSS(css string) string {
	sum := sha256.Sum256([]byte(css))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// pageData feeds pages.html.tmpl.
type pageData struct {
	Page  string // "invitation", "accepted" or "" for a message page
	Title string
	CSS   template.CSS

	// Message pages.
	Heading, Message string

	// Invitation and accepted pages.
	Customer        string // display name
	CustomerID      string
	Role            v1alpha1.Role
	RoleDescription string
	Email           string
	Username        string
	Expiry          string
	IsAdmin         bool
	// Changed says why the invitation page is shown again instead of accepted:
	// its role changed since the page was loaded.
	Changed string
}

// expiryLayout shows the expiry in UTC with the zone spelled out: the portal does
// not know the reader's time zone.
const expiryLayout = "Monday, 2 January 2006, 15:04 MST"

func invitationPage(m *v1alpha1.CustomerMembership, c *v1alpha1.Customer) pageData {
	d := membershipPage("invitation", "Invitation", m, c)
	if inv := m.Status.Invitation; inv != nil && inv.ExpiryTime != nil {
		d.Expiry = inv.ExpiryTime.UTC().Format(expiryLayout)
	}
	return d
}

func acceptedPage(m *v1alpha1.CustomerMembership, c *v1alpha1.Customer) pageData {
	return membershipPage("accepted", "Invitation accepted", m, c)
}

func membershipPage(page, title string, m *v1alpha1.CustomerMembership, c *v1alpha1.Customer) pageData {
	return pageData{
		Page:            page,
		Title:           title,
		Customer:        c.Spec.DisplayName,
		CustomerID:      c.Name,
		Role:            m.Spec.Role,
		RoleDescription: roleDescription(m.Spec.Role),
		Email:           m.Spec.Email,
		Username:        m.Status.Username,
		IsAdmin:         m.Spec.Role == v1alpha1.RoleAdmin,
	}
}

func roleDescription(role v1alpha1.Role) string {
	switch role {
	case v1alpha1.RoleAdmin:
		return "create and manage projects, invite colleagues"
	case v1alpha1.RoleEditor:
		return "change workloads in the projects"
	case v1alpha1.RoleViewer:
		return "read the projects"
	}
	return "access to the projects"
}

// messagePage is a page with a heading and one sentence: errors and refusals.
type messagePage struct {
	status           int
	title            string
	heading, message string
}

var (
	pageInvalid = messagePage{http.StatusNotFound, "Invalid link",
		"This invitation link is not valid",
		"Check that you opened the complete link from the invitation e-mail. If it still does not work, ask the person who invited you to send a new invitation."}
	pageReplaced = messagePage{http.StatusGone, "Invitation replaced",
		"This invitation was replaced by a newer one",
		"A new invitation was sent after this one, which made this link invalid. Use the link in the most recent invitation e-mail."}
	pageExpired = messagePage{http.StatusGone, "Invitation expired",
		"This invitation has expired",
		"Invitation links work for a limited time. Ask the person who invited you for a new one."}
	pageAlreadyAccepted = messagePage{http.StatusConflict, "Already accepted",
		"This invitation was already accepted",
		"An invitation link works only once, and this one has been used. If that was you, there is nothing more to do."}
	pageCustomerGone = messagePage{http.StatusGone, "Customer account gone",
		"This customer account no longer exists",
		"The customer account this invitation was for has been removed, so the invitation cannot be accepted."}
	pageTooMany = messagePage{http.StatusTooManyRequests, "Too many attempts",
		"Too many attempts",
		"Too many invitation links were tried from your network. Wait a minute and try again."}
	pageNotFound = messagePage{http.StatusNotFound, "Not found",
		"Page not found",
		"There is nothing here. Invitation links look like /invitations/… and come by e-mail."}
	pageMethodNotAllowed = messagePage{http.StatusMethodNotAllowed, "Method not allowed",
		"Method not allowed",
		"Open the invitation link in a browser."}
	pageTooLarge = messagePage{http.StatusRequestEntityTooLarge, "Request too large",
		"Request too large",
		"The request was larger than this page accepts."}
	pageBadRequest = messagePage{http.StatusBadRequest, "Bad request",
		"Bad request",
		"The request could not be understood. Reload the invitation page and try again."}
	pageUnavailable = messagePage{http.StatusServiceUnavailable, "Try again later",
		"Something went wrong",
		"The invitation could not be processed right now. Please try again in a minute."}
)

// setSecurityHeaders goes on every response: the token in the URL is a secret, so
// it must not leak through a Referer, a shared cache, or a page framed elsewhere.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// render writes a page. It renders into a buffer first so that a template error
// becomes a clean 500 rather than half a page.
func render(w http.ResponseWriter, status int, d pageData) {
	d.CSS = template.CSS(pageCSS)
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, "page", d); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

func renderMessage(w http.ResponseWriter, p messagePage) {
	render(w, p.status, pageData{Title: p.title, Heading: p.heading, Message: p.message})
}
