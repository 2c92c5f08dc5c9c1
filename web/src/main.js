// Zpanel's page: routes between the login form, the hosts page (#/hosts) and the terminal
// page (#/terminals). Talks only to the control plane's own origin.

import '@xterm/xterm/css/xterm.css';
import './style.css';
import { api, checkSession, session } from './api.js';
import { $ } from './dom.js';
import { HostsView } from './hosts.js';
import { focusLogin, setUpLogin } from './login.js';
import { TerminalsView } from './terminals.js';

const terminals = new TerminalsView({ onUnauthenticated: signedOut });
const hosts = new HostsView({
  onOpenTerminal: (host) => {
    terminals.open({ host: host.id, hostName: host.name });
    location.hash = '#/terminals';
  },
  onShowSessions: (host) => {
    location.hash = '#/terminals';
    terminals.showSessions({ id: host.id, name: host.name });
  },
  onUnauthenticated: signedOut,
});
let shown = null; // the view on screen: 'login' | 'hosts' | 'terminals'
let tabsRestored = false; // the tabs kept from before a reload are reopened once signed in

/** Shows the view the address names, or the login form when nobody is signed in. */
function route() {
  const wanted = location.hash.replace(/^#\/?/, '') === 'terminals' ? 'terminals' : 'hosts';
  const view = session.current ? wanted : 'login';
  if (view === shown) return;
  if (shown === 'hosts') hosts.hide();
  if (shown === 'terminals') terminals.hide();
  shown = view;
  for (const name of ['login', 'hosts', 'terminals']) $(`#view-${name}`).hidden = name !== view;
  $('#bar').hidden = view === 'login';
  for (const link of document.querySelectorAll('#bar nav a')) {
    link.classList.toggle('current', link.getAttribute('href') === `#/${view}`);
  }
  if (view === 'login') focusLogin();
  if (view === 'hosts') hosts.show();
  if (view === 'terminals') terminals.show();
}

function signedIn() {
  $('#user').textContent = session.current.user;
  $('#user').title = `role: ${session.current.role}`;
  if (tabsRestored) {
    terminals.resumeAll();
  } else {
    tabsRestored = true;
    terminals.restore();
  }
  route();
}

/** The login expired (a 401 somewhere): back to the form; open tabs wait, paused. */
function signedOut() {
  session.current = null;
  route();
  focusLogin('Your login has expired: sign in again.');
}

$('#logout').addEventListener('click', async () => {
  try {
    await api('POST', '/api/v1/logout');
  } catch {
    // Signed out either way, as far as this page is concerned.
  }
  terminals.closeAll();
  session.current = null;
  route();
});

window.addEventListener('hashchange', route);
setUpLogin({ onLoggedIn: signedIn });

async function start() {
  const status = await checkSession();
  if (status === 'ok') return signedIn();
  route();
  if (status === 'unreachable') focusLogin('Cannot reach the control plane.');
}

start();
