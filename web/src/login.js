// The login form: user and password for `POST /api/v1/login`, which sets the session cookie.

import { api, session } from './api.js';
import { $ } from './dom.js';

/** Wires the form; `onLoggedIn()` runs once the server accepted the password. */
export function setUpLogin({ onLoggedIn }) {
  const form = $('#login-form');
  const button = $('#login-submit');
  const error = $('#login-error');
  let waitTimer = null;

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    button.disabled = true;
    try {
      session.current = await api('POST', '/api/v1/login', {
        user: $('#login-user').value.trim(),
        password: $('#login-password').value,
      });
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
      $('#login-password').select();
      return;
    }
    button.disabled = false;
    $('#login-password').value = '';
    onLoggedIn();
  });
}

/** Shows the form, focused, with an optional line saying why. */
export function focusLogin(reason = '') {
  $('#login-error').textContent = reason;
  const user = $('#login-user');
  (user.value ? $('#login-password') : user).focus();
}
