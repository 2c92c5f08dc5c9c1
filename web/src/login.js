// The login form: user and password for `POST /api/v1/login`, which sets the session cookie.
// An account with a second factor answers `totp_required`: the form then asks for the code
// from the authenticator app and sends the login again with it.

import { api, session } from './api.js';
import { $ } from './dom.js';

/** Wires the form; `onLoggedIn()` runs once the server accepted the password. */
export function setUpLogin({ onLoggedIn }) {
  const form = $('#login-form');
  const button = $('#login-submit');
  const error = $('#login-error');
  const codeField = $('#login-code-field');
  const code = $('#login-code');
  let waitTimer = null;
  /** The user name the code field was shown for. */
  let codeFor = null;

  // Another user name: the code asked for belongs to someone else.
  $('#login-user').addEventListener('input', () => {
    if ($('#login-user').value.trim() !== codeFor) showCode(false);
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    button.disabled = true;
    const body = {
      user: $('#login-user').value.trim(),
      password: $('#login-password').value,
    };
    if (!codeField.hidden) body.code = code.value.replace(/\s+/g, '');
    try {
      session.current = await api('POST', '/api/v1/login', body);
    } catch (e) {
      error.textContent = e.message;
      if (e.status === 429 && e.retryAfter) {
        // Rate-limited: keep the button off until the server takes attempts again.
        clearTimeout(waitTimer);
        waitTimer = setTimeout(() => (button.disabled = false), e.retryAfter * 1000);
        error.textContent = `${e.message} (try again in ${e.retryAfter} s)`;
      } else {
        button.disabled = false;
      }
      if (e.body?.totp_required) {
        codeFor = body.user;
        showCode(true);
        code.focus();
      } else if (!codeField.hidden) {
        code.select();
      } else {
        $('#login-password').select();
      }
      return;
    }
    button.disabled = false;
    $('#login-password').value = '';
    showCode(false);
    onLoggedIn();
  });

  function showCode(shown) {
    codeField.hidden = !shown;
    form.dataset.step = shown ? 'code' : 'password';
    if (!shown) code.value = '';
  }
}

/** Shows the form, focused, with an optional line saying why. */
export function focusLogin(reason = '') {
  $('#login-error').textContent = reason;
  const user = $('#login-user');
  (user.value ? $('#login-password') : user).focus();
}
