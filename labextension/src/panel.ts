/**
 * The Redspot sidebar: Machine, Ray, Environments, Models, Data and Shares, each a
 * section that shows what its poller last heard and redraws when it hears again.
 */
import { CommandRegistry } from '@lumino/commands';
import { Widget, PanelLayout } from '@lumino/widgets';

import { requestAPI, serverURL } from './api';
import { h, show } from './dom';
import {
  ago,
  describeGrantee,
  describeModel,
  describeProfile,
  describeResources,
  environmentStateLabel,
  formatBytes,
  IColumn,
  IShare,
  rayStateLabel
} from './format';
import { IMetrics, RedspotModel } from './model';
import { Poller } from './poller';

export const COMMANDS = {
  openPanel: 'redspot:open-panel',
  rayStart: 'redspot:ray-start',
  rayStop: 'redspot:ray-stop',
  rayDashboard: 'redspot:ray-dashboard',
  environments: 'redspot:open-environments',
  registry: 'redspot:open-registry',
  share: 'redspot:share',
  insertSql: 'redspot:insert-sql',
  openShared: 'redspot:open-shared',
  refresh: 'redspot:refresh'
};

/** One titled part of the panel. */
abstract class Section extends Widget {
  constructor(
    readonly key: string,
    title: string
  ) {
    super();
    this.addClass('rs-Section');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', title);
    this.node.dataset.section = key;
    this.body = h('div', { class: 'rs-Section-body' });
    this.node.append(h('h3', { class: 'rs-Section-title' }, title), this.body);
  }

  protected readonly body: HTMLElement;

  /** "Could not ask: …" in place of the section's content. */
  protected problem(message: string): HTMLElement {
    return h('p', { class: 'rs-problem', role: 'status' }, message);
  }

  abstract render(): void;

  /** Redraw whenever `poller` hears something. */
  protected follow(poller: Poller<any>): void {
    poller.changed.connect(() => this.render(), this);
  }
}

function link(text: string, href: string, label?: string): HTMLElement {
  return h(
    'a',
    { href, target: '_blank', rel: 'noopener', class: 'rs-link', 'aria-label': label ?? null },
    text
  );
}

function button(
  text: string,
  onclick: () => void,
  attrs: { [name: string]: string | boolean | null } = {}
): HTMLElement {
  return h(
    'button',
    { class: 'jp-Button rs-button', type: 'button', onclick: () => onclick(), ...attrs },
    text
  );
}

function meter(label: string, used: number, total: number | null, text: string): HTMLElement {
  const attrs: { [name: string]: string | number } = {
    class: 'rs-meter',
    'aria-label': label,
    value: used
  };
  if (total) {
    attrs.max = total;
  }
  return h('div', { class: 'rs-row' }, h('span', { class: 'rs-key' }, label),
    h('meter', attrs), h('span', { class: 'rs-value' }, text));
}

class MachineSection extends Section {
  constructor(private model: RedspotModel) {
    super('machine', 'Machine');
    this.follow(model.info);
    // what this server uses now: jupyter-resource-usage's, not ours
    // asking is not use: an open panel must not keep an idle server up
    this.metrics = new Poller<IMetrics>(
      () => requestAPI<IMetrics>('v1?no_track_activity=1', {}, 'api/metrics'), 5_000);
    this.follow(this.metrics);
  }

  readonly metrics: Poller<IMetrics>;

  render(): void {
    const info = this.model.info.value;
    if (!info) {
      show(this.body, this.model.info.error ? this.problem(this.model.info.error.message) : 'Loading…');
      return;
    }
    const env = info.environment;
    const m = this.metrics.value;
    const memLimit = m?.limits.memory?.rss ?? info.profile.memory;
    show(
      this.body,
      h('p', { class: 'rs-profile' }, describeProfile(info.profile)),
      h('p', {}, 'Environment: ', env ? h('code', {}, env.id) : 'the default one'),
      info.machine
        ? h(
            'p',
            { class: 'rs-note' },
            `On one machine: it has ${info.machine.cpus} CPUs and ${formatBytes(info.machine.memory)}, ` +
              'shared by every server; the profile is not enforced here.'
          )
        : null,
      m
        ? meter('Memory', m.rss, memLimit, `${formatBytes(m.rss)} of ${formatBytes(memLimit)}`)
        : null,
      m && m.cpu_percent !== undefined
        ? meter(
            'CPU',
            m.cpu_percent,
            100 * (info.profile.cpus ?? m.cpu_count ?? 1),
            `${m.cpu_percent.toFixed(0)}% (of ${info.profile.cpus ?? m.cpu_count} CPUs)`
          )
        : null
    );
  }
}

class RaySection extends Section {
  constructor(
    private model: RedspotModel,
    private commands: CommandRegistry
  ) {
    super('ray', 'Ray cluster');
    this.follow(model.ray);
  }

  render(): void {
    const ray = this.model.ray.value;
    const error = this.model.ray.error;
    if (!ray) {
      show(this.body, error ? this.problem(error.message) : 'Loading…');
      return;
    }
    const running = ray.state === 'running';
    const state = h('span', { class: `rs-state rs-state-${ray.state}`, 'data-state': ray.state },
      rayStateLabel(ray));
    const runs = ray.runs.length
      ? h('ul', { class: 'rs-list rs-runs', 'aria-label': 'Runs on the cluster' },
          ...ray.runs.map(run =>
            h('li', { 'data-kind': run.kind },
              h('span', { class: 'rs-run-kind' }, run.kind === 'train' ? '%%ray_train' :
                run.kind === 'remote' ? '%%ray_remote' : 'job'),
              ' ', h('span', { class: 'rs-run-name' }, run.name), ' ',
              h('span', { class: 'rs-muted' }, [run.state, run.progress].filter(Boolean).join(' · ')))
          ))
      : running ? h('p', { class: 'rs-muted' }, 'Nothing running.') : null;
    show(
      this.body,
      h('p', {}, `${ray.name}: `, state),
      ray.error ? this.problem(ray.error) : null,
      running ? h('p', { class: 'rs-resources' }, `${ray.nodes} node${ray.nodes === 1 ? '' : 's'} · `
        + describeResources(ray.resources)) : null,
      runs,
      h('div', { class: 'rs-actions' },
        ray.can_start && (ray.state === 'stopped' || ray.state === 'unknown')
          ? button('Start', () => void this.commands.execute(COMMANDS.rayStart),
              { 'aria-label': 'Start my Ray cluster' })
          : null,
        ray.can_start && (running || ray.state === 'starting')
          ? button('Stop', () => void this.commands.execute(COMMANDS.rayStop),
              { 'aria-label': 'Stop my Ray cluster' })
          : null,
        running && ray.dashboard
          ? link('Dashboard', serverURL(ray.dashboard), 'Open the Ray dashboard')
          : null)
    );
  }
}

class EnvironmentsSection extends Section {
  constructor(private model: RedspotModel) {
    super('environments', 'Environments');
    this.follow(model.environments);
    this.follow(model.info);
  }

  render(): void {
    const value = this.model.environments.value;
    const error = this.model.environments.error;
    const page = this.model.info.value?.links.environments;
    const footer = page ? h('p', {}, link('Make or follow an environment…', page)) : null;
    if (!value) {
      show(this.body, error ? this.problem(error.message) : 'Loading…', footer);
      return;
    }
    const envs = [...value.environments].sort((a, b) => Number(b.mine) - Number(a.mine));
    show(
      this.body,
      envs.length
        ? h('ul', { class: 'rs-list', 'aria-label': 'Environments' },
            ...envs.map(e => h('li', { 'data-id': e.id, 'data-state': e.state },
              page ? link(e.id, `${page}#${encodeURIComponent(e.id)}`) : h('code', {}, e.id), ' ',
              h('span', { class: `rs-state rs-state-${e.state}` }, environmentStateLabel(e.state)),
              e.updated ? h('span', { class: 'rs-muted' }, ` · ${ago(e.updated)}`) : null,
              e.error ? h('div', { class: 'rs-problem' }, e.error) : null)))
        : h('p', { class: 'rs-muted' }, 'No environment yet.'),
      footer
    );
  }
}

class ModelsSection extends Section {
  constructor(private model: RedspotModel) {
    super('models', 'Models');
    this.follow(model.models);
  }

  render(): void {
    const value = this.model.models.value;
    const error = this.model.models.error;
    const registry = this.model.info.value?.links.models;
    if (!value) {
      show(this.body, error ? this.problem(error.message) : 'Loading…');
      return;
    }
    const mine = value.models.filter(m => m.mine);
    const team = value.models.filter(m => !m.mine);
    const list = (label: string, models: typeof mine) =>
      h('div', {},
        h('h4', {}, label),
        models.length
          ? h('ul', { class: 'rs-list', 'aria-label': label },
              ...models.map(m => h('li', { 'data-model': m.name },
                link(m.name, m.url, `Open ${m.name} in the registry`),
                m.private ? h('span', { class: 'rs-badge' }, 'private') : null,
                ' ', h('span', { class: 'rs-muted' }, describeModel(m)),
                !m.mine && m.owner ? h('span', { class: 'rs-muted' }, ` · ${m.owner}`) : null)))
          : h('p', { class: 'rs-muted' }, 'None yet.'));
    show(this.body, list('Mine', mine), list("My team's", team),
      registry ? h('p', {}, link('Open the registry', registry)) : null);
  }
}

class DataSection extends Section {
  constructor(
    private model: RedspotModel,
    private commands: CommandRegistry
  ) {
    super('data', 'Data');
    this.follow(model.connections);
  }

  render(): void {
    const value = this.model.connections.value;
    const error = this.model.connections.error;
    if (!value) {
      show(this.body, error ? this.problem(error.message) : 'Loading…');
      return;
    }
    if (!value.connections.length) {
      show(this.body, h('p', { class: 'rs-muted' }, 'No warehouse connection is open to you.'));
      return;
    }
    show(this.body, h('ul', { class: 'rs-tree', role: 'tree', 'aria-label': 'Warehouse' },
      ...value.connections.map(c => this.node_(c.name, `${c.name} (${c.engine})`, c.description,
        async () => {
          const { schemas } = await requestAPI<{ schemas: string[] }>(
            `warehouse/${encodeURIComponent(c.name)}/schemas`);
          return schemas.map(s => this.node_(`${c.name}/${s}`, s, '', async () => {
            const { tables } = await requestAPI<{ tables: string[] }>(
              `warehouse/${encodeURIComponent(c.name)}/tables?schema=${encodeURIComponent(s)}`);
            return tables.map(t => this.table(c.name, s, t));
          }));
        }))));
  }

  private table(connection: string, schema: string, table: string): HTMLElement {
    const insert = button('Insert %%sql cell', () => void this.commands.execute(COMMANDS.insertSql,
      { connection, schema, table }), { 'aria-label': `Insert a %%sql cell for ${schema}.${table}` });
    return this.node_(`${connection}/${schema}/${table}`, table, '', async () => {
      const { columns } = await requestAPI<{ columns: IColumn[] }>(
        `warehouse/${encodeURIComponent(connection)}/columns?schema=${encodeURIComponent(schema)}` +
        `&table=${encodeURIComponent(table)}`);
      return columns.map(col => h('li', { role: 'treeitem', class: 'rs-column' },
        h('span', {}, col.name), ' ', h('span', { class: 'rs-muted' }, col.type)));
    }, insert);
  }

  /** A tree item that loads its children when opened (keyboard: Enter or Space). */
  private node_(key: string, label: string, title: string,
    children: () => Promise<HTMLElement[]>, extra?: HTMLElement): HTMLElement {
    const list = h('ul', { role: 'group', class: 'rs-tree-children' });
    const toggle = h('button', { class: 'rs-tree-toggle', type: 'button', 'aria-expanded': 'false',
      title: title || null, 'data-key': key }, label);
    const item = h('li', { role: 'treeitem', 'data-key': key }, toggle, extra ?? null, list);
    toggle.addEventListener('click', async () => {
      const open = toggle.getAttribute('aria-expanded') === 'true';
      toggle.setAttribute('aria-expanded', String(!open));
      if (open) {
        show(list);
        return;
      }
      show(list, h('li', { class: 'rs-muted' }, 'Loading…'));
      try {
        const items = await children();
        show(list, ...(items.length ? items : [h('li', { class: 'rs-muted' }, 'Empty.')]));
      } catch (error) {
        show(list, h('li', { class: 'rs-problem' }, String((error as Error).message ?? error)));
      }
    });
    return item;
  }
}

class SharesSection extends Section {
  constructor(
    private model: RedspotModel,
    private commands: CommandRegistry
  ) {
    super('shares', 'Shares');
    this.follow(model.shares);
  }

  render(): void {
    const value = this.model.shares.value;
    const error = this.model.shares.error;
    if (!value) {
      show(this.body, error ? this.problem(error.message) : 'Loading…');
      return;
    }
    const withMe = value.with_me.filter(s => s.active);
    const mine = value.mine.filter(s => s.active);
    const item = (s: IShare, ...rest: (HTMLElement | string)[]) =>
      h('li', { 'data-share': s.id, 'data-path': s.path }, ...rest);
    show(
      this.body,
      h('h4', {}, 'Shared with me'),
      withMe.length
        ? h('ul', { class: 'rs-list', 'aria-label': 'Shared with me' }, ...withMe.map(s => item(s,
            h('button', { class: 'rs-linkbutton', type: 'button',
              onclick: () => void this.commands.execute(COMMANDS.openShared, { path: s.shared_as }),
              'aria-label': `Open ${s.path} from ${s.owner} (read-only)` }, s.path),
            h('span', { class: 'rs-muted' }, ` from ${s.owner} · read-only`))))
        : h('p', { class: 'rs-muted' }, 'Nothing.'),
      h('h4', {}, 'Mine'),
      mine.length
        ? h('ul', { class: 'rs-list', 'aria-label': 'My shares' }, ...mine.map(s => item(s,
            h('code', {}, s.path), h('span', { class: 'rs-muted' }, ` with ${describeGrantee(s.with)} `),
            button('Revoke', () => void this.revoke(s.id), {
              'aria-label': `Revoke the share of ${s.path} with ${describeGrantee(s.with)}` }))))
        : h('p', { class: 'rs-muted' }, 'Nothing shared. Right-click a file: Share…'),
      value.invited && value.invited.length
        ? h('div', {}, h('h4', {}, 'Invited into my server'),
            h('ul', { class: 'rs-list', 'aria-label': 'Invited into my server' },
              ...value.invited.map(i => h('li', {}, `${i.kind} ${i.name} `,
                button('Uninvite', () => void this.uninvite(i.kind, i.name), {
                  'aria-label': `Uninvite ${i.kind} ${i.name}` })))))
        : null
    );
  }

  private async revoke(id: string): Promise<void> {
    await requestAPI(`shares/${id}`, { method: 'DELETE' });
    await this.model.shares.refresh();
  }

  private async uninvite(kind: string, name: string): Promise<void> {
    const who = kind === 'group' ? `group:${name}` : name;
    await requestAPI(`shares?invite=${encodeURIComponent(who)}`, { method: 'DELETE' });
    await this.model.shares.refresh();
  }
}

export class RedspotPanel extends Widget {
  constructor(
    readonly model: RedspotModel,
    commands: CommandRegistry
  ) {
    super();
    this.id = 'redspot-panel';
    this.addClass('rs-Panel');
    this.title.caption = 'Redspot';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Redspot');
    const layout = (this.layout = new PanelLayout());
    this.machine = new MachineSection(model);
    this.sections = [
      this.machine,
      new RaySection(model, commands),
      new EnvironmentsSection(model),
      new ModelsSection(model),
      new DataSection(model, commands),
      new SharesSection(model, commands)
    ];
    for (const section of this.sections) {
      layout.addWidget(section);
      section.render();
    }
  }

  private machine: MachineSection;
  private sections: Section[];

  /** Ask every endpoint now. */
  refresh(): void {
    for (const poller of this.pollers()) {
      void poller.refresh();
    }
  }

  private pollers(): Poller<any>[] {
    const m = this.model;
    return [m.info, m.ray, m.environments, m.models, m.connections, m.shares, this.machine.metrics];
  }

  protected onAfterShow(): void {
    for (const poller of this.pollers()) {
      poller.start();
    }
  }

  protected onAfterAttach(): void {
    if (this.isVisible) {
      this.onAfterShow();
    }
  }

  protected onAfterHide(): void {
    // the status bar keeps following the cluster
    for (const poller of this.pollers()) {
      if (poller !== this.model.ray) {
        poller.stop();
      }
    }
  }
}
