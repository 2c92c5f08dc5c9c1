// The account page (#/account): the user's browser sessions (each can be signed out), the
// TOTP second factor (turn on with a code from the app, turn off with one) and API tokens
// (create one, shown once, and revoke).

import { api, checkSession, session } from './api.js';
import { choose } from './dialogs.js';
import { $, dateTime, h } from './dom.js';
import { qrCode } from './qr.js';

export class AccountView {
  /**
   * @param {object} callbacks
   * @param {() => void} callbacks.onUnauthenticated   the login ended (a 401)
   * @param {() => void} callbacks.onSignedOut          the user signed this browser out
   */
  constructor({ onUnauthenticated, onSignedOut }) {
    this.onUnauthenticated = onUnauthenticated;
    this.onSignedOut = onSignedOut;
    /** The TOTP secret being set up ({secret, url}), or null. */
    this.setup = null;
    $('#token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.createToken();
    });
    $('#token-copy').addEventListener('click', () => this.copyToken());
  }

  show() {
    $('#account-error').textContent = '';
    $('#token-created').hidden = true;
    $('#token-secret').textContent = '';
    const me = session.current;
    $('#account-who').textContent = `${me.user} · ${me.admin ? 'admin of every workspace' : me.role || 'no role yet'}`;
    this.fillWorkspaces();
    this.renderTotp();
    this.loadSessions();
    this.loadTokens();
  }

  hide() {
    // A secret on its way to an app is not kept once the page is left.
    this.setup = null;
    $('#token-secret').textContent = '';
  }

  /** Shows the server's line for a failed call; a 401 means the login ended. */
  fail(e) {
    if (e.status === 401) return this.onUnauthenticated();
    $('#account-error').textContent = e.message;
  }

  // === browser sessions ===

  async loadSessions() {
    let sessions;
    try {
      sessions = await api('GET', '/api/v1/account/sessions');
    } catch (e) {
      return this.fail(e);
    }
    $('#account-sessions').replaceChildren(...sessions.map((s) =>
      h('tr', { dataset: { session: s.id, current: String(s.current) } },
        h('td', {}, dateTime(s.created_at), s.current ? h('span', { class: 'tag note' }, 'this browser') : null),
        h('td', { class: 'mono small' }, s.address || '—'),
        h('td', {}, dateTime(s.expires_at)),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'danger sign-out', onclick: () => this.signOut(s) }, 'Sign out')),
      )));
  }

  async signOut(s) {
    const choice = await choose({
      name: 'sign-out-session',
      title: s.current ? 'Sign out this browser?' : 'Sign out that session?',
      message: `The session from ${s.address || 'an unknown address'}, signed in ${dateTime(s.created_at)}, ends at once.`,
      choices: [{ id: 'sign-out', label: 'Sign out', kind: 'danger' }],
    });
    if (choice !== 'sign-out') return;
    try {
      await api('DELETE', `/api/v1/account/sessions/${encodeURIComponent(s.id)}`);
    } catch (e) {
      return this.fail(e);
    }
    if (s.current) return this.onSignedOut();
    this.loadSessions();
  }

  // === TOTP ===

  renderTotp() {
    const box = $('#account-totp');
    const body = $('#totp-body');
    const error = h('p', { class: 'error', id: 'totp-error', role: 'alert' });
    const code = h('input', {
      id: 'totp-code',
      inputmode: 'numeric',
      autocomplete: 'one-time-code',
      spellcheck: 'false',
      placeholder: '123456',
      class: 'code',
    });
    const form = (label, id, kind, send, ...more) => h('form', {
      class: 'filters',
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        try {
          await send(code.value.replace(/\s+/g, ''));
        } catch (e) {
          if (e.status === 401) return this.onUnauthenticated();
          error.textContent = e.message;
          code.select();
        }
      },
    }, h('label', {}, 'Code from the app', code), h('button', { id, type: 'submit', class: kind }, label), ...more);

    if (session.current.totp) {
      box.dataset.state = 'on';
      body.replaceChildren(
        h('p', {}, h('span', { class: 'status online' }, 'on'), ' Signing in asks for a code from your authenticator app.'),
        form('Turn off', 'totp-disable', 'danger', async (value) => {
          await api('POST', '/api/v1/account/totp/disable', { code: value });
          await this.refreshSession();
        }),
        error,
      );
    } else if (this.setup) {
      box.dataset.state = 'setup';
      body.replaceChildren(
        h('p', {}, 'Scan the code with an authenticator app, or type the secret into it; then enter the code it shows. Your other browser sessions will be signed out.'),
        h('div', { class: 'totp-setup' },
          qrCode(this.setup.url),
          h('div', { class: 'totp-secret' },
            h('label', {}, 'Secret', h('code', { id: 'totp-secret', class: 'mono' }, this.setup.secret)),
            h('label', {}, 'URL', h('code', { id: 'totp-url', class: 'mono small' }, this.setup.url)),
          ),
        ),
        form('Confirm', 'totp-confirm', 'primary', async (value) => {
          await api('POST', '/api/v1/account/totp/confirm', { code: value });
          this.setup = null;
          await this.refreshSession();
          this.loadSessions();
        }, h('button', { type: 'button', onclick: () => { this.setup = null; this.renderTotp(); } }, 'Cancel')),
        error,
      );
      requestAnimationFrame(() => code.focus());
    } else {
      box.dataset.state = 'off';
      body.replaceChildren(
        h('p', {}, h('span', { class: 'status offline' }, 'off'), ' Signing in takes your password only.'),
        h('button', {
          id: 'totp-begin',
          type: 'button',
          class: 'primary',
          onclick: async () => {
            error.textContent = '';
            try {
              this.setup = await api('POST', '/api/v1/account/totp');
            } catch (e) {
              if (e.status === 401) return this.onUnauthenticated();
              error.textContent = e.message;
              return;
            }
            this.renderTotp();
          },
        }, 'Turn on'),
        error,
      );
    }
  }

  /** Reads the session again (its `totp` changed) and redraws the TOTP part. */
  async refreshSession() {
    if ((await checkSession()) === 'unauthenticated') return this.onUnauthenticated();
    this.renderTotp();
  }

  // === API tokens ===

  fillWorkspaces() {
    const me = session.current;
    const options = me.workspaces
      .filter((w) => w.role)
      .map((w) => h('option', { value: w.name }, `${w.name} (${w.role})`));
    if (me.admin) options.unshift(h('option', { value: '' }, 'every workspace (admin)'));
    $('#token-workspace').replaceChildren(...options);
  }

  async loadTokens() {
    let tokens;
    try {
      tokens = await api('GET', '/api/v1/account/api-tokens');
    } catch (e) {
      return this.fail(e);
    }
    const now = Date.now() / 1000;
    const live = (t) => !t.revoked_at && !(t.expires_at && t.expires_at <= now);
    const rows = tokens
      .sort((a, b) => b.created_at - a.created_at)
      .map((t) => h('tr', { dataset: { token: t.id, name: t.name, live: String(live(t)) } },
        h('td', { class: 'name' }, t.name, h('div', { class: 'muted mono small' }, t.id)),
        h('td', {}, t.workspace || 'every workspace'),
        h('td', {}, t.role),
        h('td', {}, dateTime(t.created_at)),
        h('td', {}, t.revoked_at ? `revoked ${dateTime(t.revoked_at)}` : t.expires_at ? dateTime(t.expires_at) : 'never'),
        h('td', {}, t.last_used_at ? dateTime(t.last_used_at) : 'never'),
        h('td', { class: 'actions' }, live(t)
          ? h('button', { type: 'button', class: 'danger revoke', onclick: () => this.revokeToken(t) }, 'Revoke')
          : null),
      ));
    if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No API tokens.')));
    $('#account-tokens').replaceChildren(...rows);
  }

  async createToken() {
    $('#account-error').textContent = '';
    const ttl = Number($('#token-ttl').value);
    const body = {
      workspace: $('#token-workspace').value || null,
      role: $('#token-role').value || null,
      ttl_seconds: ttl,
      name: $('#token-name').value.trim() || null,
    };
    let created;
    try {
      created = await api('POST', '/api/v1/account/api-tokens', body);
    } catch (e) {
      return this.fail(e);
    }
    $('#token-secret').textContent = created.token;
    $('#token-created').hidden = false;
    $('#token-copy').textContent = 'Copy';
    $('#token-name').value = '';
    this.loadTokens();
  }

  async copyToken() {
    try {
      await navigator.clipboard.writeText($('#token-secret').textContent);
      $('#token-copy').textContent = 'Copied';
    } catch {
      // No clipboard (permissions): select the text so Ctrl+C copies it.
      getSelection().selectAllChildren($('#token-secret'));
      $('#token-copy').textContent = 'Press Ctrl+C';
    }
  }

  async revokeToken(t) {
    const choice = await choose({
      name: 'revoke-token',
      title: `Revoke the token ${t.name}?`,
      message: 'Scripts using it are refused from now on. This cannot be undone.',
      choices: [{ id: 'revoke', label: 'Revoke', kind: 'danger' }],
    });
    if (choice !== 'revoke') return;
    try {
      await api('DELETE', `/api/v1/account/api-tokens/${encodeURIComponent(t.id)}`);
    } catch (e) {
      return this.fail(e);
    }
    this.loadTokens();
  }
}
