/**
 * Share… (the file browser's context menu): share a file or folder read-only with a
 * user or group, or invite them into this server; and the path's current shares.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { requestAPI } from './api';
import { h, show } from './dom';
import { describeGrantee, grantee, IShares, sharePath } from './format';

interface IGrantees {
  users: string[];
  groups: string[];
}

class ShareForm extends Widget {
  constructor(readonly path: string, grantees: IGrantees, shares: IShares) {
    super();
    this.addClass('rs-ShareForm');
    const users = h('datalist', { id: 'rs-share-users' }, ...grantees.users.map(u => h('option', { value: u })));
    const groups = h('datalist', { id: 'rs-share-groups' }, ...grantees.groups.map(g => h('option', { value: g })));
    this.kindSelect = h('select', { 'aria-label': 'Share with a user or a group', name: 'kind' },
      h('option', { value: 'user' }, 'user'), h('option', { value: 'group' }, 'group')) as HTMLSelectElement;
    this.nameInput = h('input', { type: 'text', name: 'name', list: 'rs-share-users',
      'aria-label': 'Name of the user or group', placeholder: 'bob', autocomplete: 'off' }) as HTMLInputElement;
    this.kindSelect.addEventListener('change', () =>
      this.nameInput.setAttribute('list', this.kindSelect.value === 'group' ? 'rs-share-groups' : 'rs-share-users'));
    const radio = (value: string, label: string, checked: boolean, hint: string) =>
      h('label', { class: 'rs-radio' },
        h('input', { type: 'radio', name: 'how', value, checked }), ` ${label}`,
        h('div', { class: 'rs-muted' }, hint));
    const current = shares.mine.filter(s => s.active && sharePath(s.path) === sharePath(path));
    const invited = shares.invited;
    show(
      this.node,
      h('p', {}, 'Share ', h('code', {}, path || 'my home folder')),
      h('div', { class: 'rs-row' }, this.kindSelect, this.nameInput, users, groups),
      h('fieldset', {}, h('legend', {}, 'How'),
        radio('read', 'Read-only', true, 'They can open and copy it, not change it.'),
        invited === null
          ? h('p', { class: 'rs-muted' }, 'Inviting into your server is not allowed for you here.')
          : radio('invite', 'Invite into my server', false,
              'They work in your server, as you, on everything in it (real-time collaboration).')),
      h('h4', {}, 'Shared now'),
      current.length
        ? h('ul', { class: 'rs-list', 'aria-label': 'Current shares of this path' },
            ...current.map(s => h('li', {}, `read-only with ${describeGrantee(s.with)}`)))
        : h('p', { class: 'rs-muted' }, 'Not shared.'),
      invited && invited.length
        ? h('p', { class: 'rs-muted' }, 'Invited into this server: ' +
            invited.map(i => `${i.kind} ${i.name}`).join(', '))
        : null,
      this.status
    );
  }

  readonly kindSelect: HTMLSelectElement;
  readonly nameInput: HTMLInputElement;
  readonly status = h('p', { class: 'rs-problem', role: 'alert' });

  getValue(): { how: string; with: string } {
    const how = (this.node.querySelector('input[name="how"]:checked') as HTMLInputElement)?.value ?? 'read';
    return { how, with: grantee(this.kindSelect.value as 'user' | 'group', this.nameInput.value.trim()) };
  }
}

/** Show the dialog for `path` until it shares, is cancelled, or the user gives up. */
export async function shareDialog(path: string, onShared: () => void): Promise<void> {
  const [grantees, shares] = await Promise.all([
    requestAPI<IGrantees>('grantees'),
    requestAPI<IShares>('shares')
  ]);
  const form = new ShareForm(sharePath(path), grantees, shares);
  for (;;) {
    const result = await showDialog({
      title: 'Share',
      body: form,
      focusNodeSelector: 'input[name="name"]',
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Share' })]
    });
    if (!result.button.accept || !result.value) {
      return;
    }
    const value = result.value;
    try {
      if (!value.with || value.with === 'group:') {
        throw new Error('Say whom to share with: a user or a group.');
      }
      const body = value.how === 'invite' ? { invite: value.with } : { path: form.path, with: value.with };
      await requestAPI('shares', { method: 'POST', body: JSON.stringify(body) });
      onShared();
      return;
    } catch (error) {
      show(form.status, String((error as Error).message ?? error));
    }
  }
}
