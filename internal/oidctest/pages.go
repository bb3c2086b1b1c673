package oidctest

import (
	"html/template"
	"maps"
	"net/http"
	"slices"
)

// The provider's pages, for a person or a headless browser: the login page
// of browser logins and the page where a device login's code is entered.
// Both log in by choosing a user, with no password.
const (
	loginPath  = "/login"
	devicePath = "/device"
)

var page = template.Must(template.New("page").Parse(`<!doctype html>
<title>oidctest</title>
<p>{{.Message}}</p>
{{if .Action}}<form method="get" action="{{.Action}}">
{{if .RequestID}}<input type="hidden" name="authRequestID" value="{{.RequestID}}">{{end}}
{{if .AskCode}}<label>Code <input name="user_code" value="{{.UserCode}}"></label>{{end}}
<label>User <select name="username">{{range .Users}}<option>{{.}}</option>{{end}}</select></label>
<button type="submit">Log in</button>
</form>{{end}}
`))

type pageData struct {
	Message, Action, RequestID, UserCode string
	AskCode                              bool
	Users                                []string
}

func (p *Provider) render(w http.ResponseWriter, status int, d pageData) {
	p.st.mu.Lock()
	d.Users = slices.Sorted(maps.Keys(p.st.users))
	p.st.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = page.Execute(w, d) // the browser has gone
}

// login completes a browser login: as the user the form names, or as
// WithLogin's.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	id, username := r.FormValue("authRequestID"), r.FormValue("username")
	if username == "" {
		username = p.autoLogin
	}
	if username == "" {
		p.render(w, http.StatusOK, pageData{Message: "Log in to " + p.issuer, Action: loginPath, RequestID: id})
		return
	}
	if err := p.st.completeLogin(id, username); err != nil {
		p.render(w, http.StatusBadRequest, pageData{Message: err.Error()})
		return
	}
	http.Redirect(w, r, p.callbackURL(r.Context(), id), http.StatusFound)
}

// device approves a device login, as ApproveDevice does: the page the
// verification URI shows.
func (p *Provider) device(w http.ResponseWriter, r *http.Request) {
	code, username := r.FormValue("user_code"), r.FormValue("username")
	if code == "" || username == "" {
		p.render(w, http.StatusOK, pageData{Message: "Enter the code the device shows", Action: devicePath, UserCode: code, AskCode: true})
		return
	}
	if err := p.ApproveDevice(code, username); err != nil {
		p.render(w, http.StatusBadRequest, pageData{Message: err.Error()})
		return
	}
	p.render(w, http.StatusOK, pageData{Message: "Logged in as " + username + ": return to your device"})
}
