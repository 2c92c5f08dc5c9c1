// The team page (#/team, admins): users (add, change role, reset TOTP, remove) and
// workspaces (create with quotas, edit quotas, add and remove members, move a host in).

import { api } from './api.js';
import { choose, formDialog } from './dialogs.js';
import { $, dateTime, h } from './dom.js';

const ROLES = ['viewer', 'developer', 'operator', 'admin'];
const MEMBER_ROLES = ['viewer', 'developer', 'operator'];

/** A quota field's value for the API: a number, or null (unlimited) when empty or 0. */
function quota(text) {
  const n = Number.parseInt(text, 10);
  return Number.isFinite(n) && n > 0 ? n : null;
}

const options = (values) => values.map((v) => ({ value: v, label: v }));

export class TeamView {
  /** @param {{onUnauthenticated: () => void}} callbacks */
  constructor({ onUnauthenticated }) {
    this.onUnauthenticated = onUnauthenticated;
    this.users = [];
    this.workspaces = [];
    $('#user-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.addUser();
    });
    $('#user-role').addEventListener('change', () => {
      // Admin is a global role: no workspace.
      $('#user-workspace').disabled = $('#user-role').value === 'admin';
    });
    $('#workspace-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.createWorkspace();
    });
  }

  show() {
    $('#team-error').textContent = '';
    this.load();
  }

  hide() {}

  fail(e) {
    if (e.status === 401) return this.onUnauthenticated();
    $('#team-error').textContent = e.message;
  }

  /** Runs a change; on success clears the error line and lists everything again. */
  async change(call) {
    $('#team-error').textContent = '';
    try {
      await call();
    } catch (e) {
      this.fail(e);
      return false;
    }
    await this.load();
    return true;
  }

  async load() {
    try {
      [this.users, this.workspaces] = await Promise.all([
        api('GET', '/api/v1/users'),
        api('GET', '/api/v1/workspaces'),
      ]);
    } catch (e) {
      return this.fail(e);
    }
    this.users.sort((a, b) => a.name.localeCompare(b.name));
    this.workspaces.sort((a, b) => a.name.localeCompare(b.name));
    const select = $('#user-workspace');
    const chosen = select.value;
    select.replaceChildren(...this.workspaces.map((w) =>
      h('option', { value: w.name, selected: w.name === chosen }, w.name)));
    this.renderUsers();
    this.renderWorkspaces();
  }

  // === users ===

  renderUsers() {
    $('#team-users').replaceChildren(...this.users.map((user) => {
      const roles = user.admin
        ? [h('span', { class: 'tag' }, 'admin')]
        : user.memberships.map((m) => h('span', { class: 'tag' }, `${m.workspace}: ${m.role}`));
      return h('tr', { dataset: { user: user.name } },
        h('td', { class: 'name' }, user.name),
        h('td', { class: 'roles' }, roles.length ? roles : h('span', { class: 'muted' }, 'none')),
        h('td', {}, user.has_password ? 'set' : h('span', { class: 'muted' }, 'none')),
        h('td', {}, user.totp ? 'on' : h('span', { class: 'muted' }, 'off')),
        h('td', {}, dateTime(user.created_at)),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'set-role', onclick: () => this.setRole(user) }, 'Change role'),
          h('button', { type: 'button', class: 'danger reset-totp', disabled: !user.totp, onclick: () => this.resetTotp(user) }, 'Reset TOTP'),
          h('button', { type: 'button', class: 'danger remove', onclick: () => this.removeUser(user) }, 'Remove'),
        ),
      );
    }));
  }

  async addUser() {
    const role = $('#user-role').value;
    const body = {
      name: $('#user-name').value.trim(),
      role,
      workspace: role === 'admin' ? null : $('#user-workspace').value || null,
      password: $('#user-password').value || null,
    };
    if (await this.change(() => api('POST', '/api/v1/users', body))) {
      $('#user-name').value = '';
      $('#user-password').value = '';
    }
  }

  async setRole(user) {
    const current = user.admin ? 'admin' : user.memberships[0]?.role ?? 'viewer';
    const answer = await formDialog({
      name: 'set-role',
      title: `Role of ${user.name}`,
      message: 'Admin is global. Another role is set in one workspace and takes the admin role away.',
      fields: [
        { id: 'role', label: 'Role', type: 'select', value: current, options: options(ROLES) },
        {
          id: 'workspace',
          label: 'Workspace (for a role other than admin)',
          type: 'select',
          value: user.memberships[0]?.workspace,
          options: options(this.workspaces.map((w) => w.name)),
        },
      ],
      ok: 'Change',
    });
    if (!answer) return;
    const body = { role: answer.role, workspace: answer.role === 'admin' ? null : answer.workspace };
    await this.change(() => api('PUT', `/api/v1/users/${encodeURIComponent(user.name)}/role`, body));
  }

  async resetTotp(user) {
    const choice = await choose({
      name: 'reset-totp',
      title: `Reset the second factor of ${user.name}?`,
      message: 'They sign in with their password alone until they turn TOTP on again.',
      choices: [{ id: 'reset', label: 'Reset TOTP', kind: 'danger' }],
    });
    if (choice !== 'reset') return;
    await this.change(() => api('DELETE', `/api/v1/users/${encodeURIComponent(user.name)}/totp`));
  }

  async removeUser(user) {
    const choice = await choose({
      name: 'remove-user',
      title: `Remove ${user.name}?`,
      message: 'Their browser sessions and API tokens stop working at once.',
      choices: [{ id: 'remove', label: 'Remove', kind: 'danger' }],
    });
    if (choice !== 'remove') return;
    await this.change(() => api('DELETE', `/api/v1/users/${encodeURIComponent(user.name)}`));
  }

  // === workspaces ===

  renderWorkspaces() {
    const limit = (n) => (n === null || n === undefined ? '∞' : String(n));
    $('#team-workspaces').replaceChildren(...this.workspaces.map((w) => {
      const members = this.users.flatMap((user) => user.memberships
        .filter((m) => m.workspace === w.name)
        .map((m) => h('span', { class: 'tag member', dataset: { member: user.name } },
          `${user.name}: ${m.role}`,
          h('button', {
            type: 'button',
            class: 'tag-remove',
            title: `Remove ${user.name} from ${w.name}`,
            onclick: () => this.removeMember(w, user.name),
          }, '×'))));
      return h('tr', { dataset: { workspace: w.name } },
        h('td', { class: 'name' }, w.name, h('div', { class: 'muted mono small' }, w.id)),
        h('td', {}, String(w.hosts)),
        h('td', { class: 'roles' }, members.length ? members : h('span', { class: 'muted' }, 'none')),
        h('td', { class: 'small' },
          `hosts ${limit(w.max_hosts)} · terminals ${limit(w.max_terminals)} · API tokens ${limit(w.max_api_tokens)}`),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'add-member', onclick: () => this.addMember(w) }, 'Add member'),
          h('button', { type: 'button', class: 'add-host', onclick: () => this.addHost(w) }, 'Move a host here'),
          h('button', { type: 'button', class: 'quota', onclick: () => this.editQuota(w) }, 'Quotas'),
        ),
      );
    }));
  }

  async createWorkspace() {
    const body = {
      name: $('#workspace-name').value.trim(),
      max_hosts: quota($('#workspace-max-hosts').value),
      max_terminals: quota($('#workspace-max-terminals').value),
      max_api_tokens: quota($('#workspace-max-api-tokens').value),
    };
    if (await this.change(() => api('POST', '/api/v1/workspaces', body))) {
      for (const id of ['name', 'max-hosts', 'max-terminals', 'max-api-tokens']) $(`#workspace-${id}`).value = '';
    }
  }

  async editQuota(w) {
    const field = (id, label) => ({ id, label, type: 'number', value: w[id] ?? '', placeholder: 'unlimited' });
    const answer = await formDialog({
      name: 'quota',
      title: `Quotas of ${w.name}`,
      message: 'Empty or 0 is unlimited.',
      fields: [field('max_hosts', 'Hosts'), field('max_terminals', 'Terminals open at once'), field('max_api_tokens', 'Live API tokens')],
      ok: 'Save',
    });
    if (!answer) return;
    const body = {
      max_hosts: quota(answer.max_hosts),
      max_terminals: quota(answer.max_terminals),
      max_api_tokens: quota(answer.max_api_tokens),
    };
    await this.change(() => api('PUT', `/api/v1/workspaces/${encodeURIComponent(w.id)}/quota`, body));
  }

  async addMember(w) {
    const answer = await formDialog({
      name: 'add-member',
      title: `Add a member to ${w.name}`,
      fields: [
        { id: 'user', label: 'User', type: 'select', options: options(this.users.filter((u) => !u.admin).map((u) => u.name)) },
        { id: 'role', label: 'Role', type: 'select', value: 'developer', options: options(MEMBER_ROLES) },
      ],
      ok: 'Add',
    });
    if (!answer) return;
    const body = { user: answer.user, role: answer.role };
    await this.change(() => api('POST', `/api/v1/workspaces/${encodeURIComponent(w.id)}/members`, body));
  }

  async removeMember(w, user) {
    const choice = await choose({
      name: 'remove-member',
      title: `Remove ${user} from ${w.name}?`,
      message: `${user} loses access to the workspace's hosts.`,
      choices: [{ id: 'remove', label: 'Remove', kind: 'danger' }],
    });
    if (choice !== 'remove') return;
    await this.change(() =>
      api('DELETE', `/api/v1/workspaces/${encodeURIComponent(w.id)}/members/${encodeURIComponent(user)}`));
  }

  async addHost(w) {
    let hosts;
    try {
      hosts = await api('GET', '/api/v1/hosts');
    } catch (e) {
      return this.fail(e);
    }
    const elsewhere = hosts.filter((host) => host.workspace !== w.name).sort((a, b) => a.name.localeCompare(b.name));
    if (elsewhere.length === 0) {
      $('#team-error').textContent = `Every host is already in ${w.name}.`;
      return;
    }
    const answer = await formDialog({
      name: 'add-host',
      title: `Move a host into ${w.name}`,
      message: 'Members of its old workspace lose access to it.',
      fields: [{
        id: 'host',
        label: 'Host',
        type: 'select',
        options: elsewhere.map((host) => ({ value: host.id, label: `${host.name} (now in ${host.workspace})` })),
      }],
      ok: 'Move',
    });
    if (!answer) return;
    await this.change(() => api('POST', `/api/v1/workspaces/${encodeURIComponent(w.id)}/hosts`, { host: answer.host }));
  }
}
