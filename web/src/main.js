// Zpanel's page: routes between the login form, the hosts page (#/hosts), the terminal
// page (#/terminals), the file manager (#/files/HOST?path=DIR or ?edit=FILE), a host's
// Docker page (#/docker/HOST?tab=NAME or ?container=ID), the metrics of every host
// (#/metrics) or one (#/metrics/HOST?range=24h), alerts (#/alerts?tab=NAME), the audit log
// (#/audit), the user's account (#/account) and users and workspaces (#/team, admins).
// Talks only to the control plane's own origin.

import '@xterm/xterm/css/xterm.css';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { AccountView } from './account.js';
import { AlertsView } from './alerts.js';
import { api, atLeast, canReadAudit, checkSession, session } from './api.js';
import { AuditView } from './audit.js';
import { $ } from './dom.js';
import { DockerView } from './docker.js';
import { dockerHash } from './docker-ui.js';
import { FilesView } from './files.js';
import { filesHash } from './files-ui.js';
import { HostsView } from './hosts.js';
import { focusLogin, setUpLogin } from './login.js';
import { MetricsView } from './metrics.js';
import { TeamView } from './team.js';
import { TerminalsView } from './terminals.js';

const terminals = new TerminalsView({
  onUnauthenticated: signedOut,
  onOpenFiles: (host) => (location.hash = filesHash(host)),
});
const files = new FilesView({ onUnauthenticated: signedOut });
const docker = new DockerView({
  onUnauthenticated: signedOut,
  onOpenShell: (tab) => {
    terminals.open(tab);
    location.hash = '#/terminals';
  },
});
const hosts = new HostsView({
  onOpenTerminal: (host) => {
    terminals.open({ host: host.id, hostName: host.name });
    location.hash = '#/terminals';
  },
  onShowSessions: (host) => {
    location.hash = '#/terminals';
    terminals.showSessions({ id: host.id, name: host.name });
  },
  onOpenFiles: (host) => (location.hash = filesHash(host.id)),
  onOpenDocker: (host) => (location.hash = dockerHash(host.id)),
  onUnauthenticated: signedOut,
});
const audit = new AuditView({ onUnauthenticated: signedOut });
const account = new AccountView({ onUnauthenticated: signedOut, onSignedOut: loggedOut });
const team = new TeamView({ onUnauthenticated: signedOut });
const metrics = new MetricsView({ onUnauthenticated: signedOut });
const alerts = new AlertsView({ onUnauthenticated: signedOut });
/** The views shown by `route` other than login, each with show() and hide(). */
const VIEWS = { hosts, terminals, files, docker, metrics, alerts, audit, account, team };
let shown = null; // the view on screen: 'login' or a name in VIEWS
let tabsRestored = false; // the tabs kept from before a reload are reopened once signed in
let routedHash = location.hash; // the address last routed to

/**
 * The address as {view, host, path, edit, query}: `#/files/HOST?path=DIR`, `#/terminals`,
 * `#/docker/HOST?container=ID`, … (`query`: all of its parameters).
 */
function parseHash() {
  const [route, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [name, host] = route.split('/');
  const params = new URLSearchParams(query);
  const view = Object.hasOwn(VIEWS, name) ? name : 'hosts';
  return {
    view,
    host: host ? decodeURIComponent(host) : null,
    path: params.get('path'),
    edit: params.get('edit'),
    query: params,
  };
}

/** Shows the view the address names, or the login form when nobody is signed in. */
function route() {
  routedHash = location.hash;
  const wanted = parseHash();
  const view = session.current ? wanted.view : 'login';
  if (view === 'files') files.navigate(wanted);
  if (view === 'docker') docker.navigate(wanted);
  if (view === 'metrics') metrics.navigate(wanted);
  if (view === 'alerts') alerts.navigate(wanted);
  if (view === shown) return;
  if (Object.hasOwn(VIEWS, shown ?? '')) VIEWS[shown].hide();
  shown = view;
  for (const name of ['login', ...Object.keys(VIEWS)]) $(`#view-${name}`).hidden = name !== view;
  $('#bar').hidden = view === 'login';
  for (const link of document.querySelectorAll('#bar nav a')) {
    link.classList.toggle('current', link.getAttribute('href').startsWith(`#/${view}`));
  }
  if (view === 'login') focusLogin();
  else VIEWS[view].show();
}

/** Leaving an editor with unsaved edits asks first (and stays when the user says so). */
async function onHashChange() {
  if (shown === 'files' && files.dirty && location.hash !== routedHash) {
    const wanted = location.hash;
    history.replaceState(null, '', routedHash); // stay here while asking
    if (!(await files.confirmLeave())) return;
    files.closeEditor();
    location.hash = wanted;
    return;
  }
  route();
}

function signedIn() {
  $('#user').textContent = session.current.user;
  $('#user').title = `role: ${session.current.role || 'none'}`;
  // The server refuses what the role does not allow either way; these only tidy the bar.
  $('#nav-audit').hidden = !canReadAudit();
  $('#nav-metrics').hidden = !atLeast(session.current.role, 'viewer');
  $('#nav-alerts').hidden = !atLeast(session.current.role, 'viewer');
  $('#nav-team').hidden = !session.current.admin;
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
  if (files.dirty && !(await files.confirmLeave())) return;
  try {
    await api('POST', '/api/v1/logout');
  } catch {
    // Signed out either way, as far as this page is concerned.
  }
  loggedOut();
});

/** This browser's session ended on purpose: close what is open, back to the form. */
function loggedOut() {
  terminals.closeAll();
  files.closeEditor();
  session.current = null;
  route();
}

window.addEventListener('hashchange', onHashChange);
// Closing or reloading the page with unsaved edits: the browser asks.
window.addEventListener('beforeunload', (event) => {
  if (files.dirty) event.preventDefault();
});
setUpLogin({ onLoggedIn: signedIn });

async function start() {
  const status = await checkSession();
  if (status === 'ok') return signedIn();
  route();
  if (status === 'unreachable') focusLogin('Cannot reach the control plane.');
}

start();
