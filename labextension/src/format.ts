/**
 * What the server's Redspot endpoints answer, and how the panel says it: pure
 * functions, no JupyterLab import (tested with jest in test/format.test.ts).
 */

export interface IProfile {
  name: string | null;
  cpus: number | null;
  memory: number | null;
  gpus: number | null;
  gpu_model: string | null;
}

export interface IInfo {
  version: string;
  user: string | null;
  profile: IProfile;
  environment: { id: string; tag: string | null } | null;
  /** What this machine really has, when servers share one machine (nothing enforced). */
  machine: { cpus: number; memory: number } | null;
  links: { [name: string]: string };
}

export interface IUsage {
  used: number;
  total: number;
}

export interface IRun {
  kind: 'remote' | 'train' | 'job';
  id: string;
  name: string;
  state: string;
  started: number | null;
  progress: string | null;
}

export type RayState = 'stopped' | 'starting' | 'running' | 'stopping' | 'unknown';

export interface IRay {
  kind: 'local' | 'kuberay';
  name: string;
  state: RayState;
  can_start: boolean;
  dashboard: string | null;
  nodes: number;
  resources: { [resource: string]: IUsage };
  idle_seconds: number | null;
  idle_timeout: number | null;
  runs: IRun[];
  error: string | null;
  /** while starting: how long the last start took, in seconds */
  expected_seconds?: number | null;
}

export interface IEnvironment {
  id: string;
  owner: string;
  name: string;
  state: string;
  mine: boolean;
  updated: number | null;
  error: string | null;
}

export interface IModel {
  name: string;
  owner: string | null;
  mine: boolean;
  private: boolean;
  latest_version: string | null;
  aliases: { [alias: string]: string };
  url: string;
}

export interface IConnection {
  name: string;
  engine: string;
  description: string;
}

export interface IColumn {
  name: string;
  type: string;
}

export interface IShare {
  id: string;
  owner: string;
  path: string;
  /** "bob" or "group:vision" */
  with: string;
  /** "file" or "folder" */
  kind: string;
  created: number;
  active: boolean;
  /** where a recipient finds it in their home: shared-with-me/<owner>/<path> */
  shared_as: string;
}

export interface IShares {
  mine: IShare[];
  with_me: IShare[];
  invited: { kind: string; name: string }[] | null;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 -> "1.5 KiB"; 16 GiB -> "16 GiB". */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes) || bytes < 0) {
    return '?';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  const shown = unit === 0 || value >= 10 || Number.isInteger(value) ? value.toFixed(0) : value.toFixed(1);
  return `${shown} ${UNITS[unit]}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** "m5.xlarge: 4 vCPUs, 16 GiB, 1 GPU (A10G)". */
export function describeProfile(profile: IProfile): string {
  const parts: string[] = [];
  if (profile.cpus !== null) {
    parts.push(`${profile.cpus} vCPU${profile.cpus === 1 ? '' : 's'}`);
  }
  if (profile.memory !== null) {
    parts.push(formatBytes(profile.memory));
  }
  if (profile.gpus) {
    parts.push(plural(profile.gpus, 'GPU') + (profile.gpu_model ? ` (${profile.gpu_model})` : ''));
  }
  const name = profile.name ?? 'no profile';
  return parts.length ? `${name}: ${parts.join(', ')}` : name;
}

const RAY_STATES: { [state in RayState]: string } = {
  stopped: 'stopped',
  starting: 'starting…',
  running: 'running',
  stopping: 'stopping…',
  unknown: 'unknown'
};

/** The cluster's state as the panel and the status bar say it. */
export function rayStateLabel(ray: IRay): string {
  let label = RAY_STATES[ray.state] ?? ray.state;
  if (ray.state === 'starting' && ray.expected_seconds) {
    label = `starting… (about ${formatDuration(ray.expected_seconds)}, as last time)`;
  }
  if (
    ray.state === 'running' &&
    ray.idle_seconds !== null &&
    ray.idle_timeout !== null &&
    ray.idle_timeout > 0 &&
    ray.runs.length === 0
  ) {
    const left = ray.idle_timeout - ray.idle_seconds;
    if (left <= 300) {
      label = `idle, stopping in ${formatDuration(Math.max(0, left))}`;
    }
  }
  return label;
}

/** "CPU 1/4 · GPU 0/1 · memory 1.2/8 GiB" (what is in use of what the cluster has). */
export function describeResources(resources: { [resource: string]: IUsage }): string {
  const parts: string[] = [];
  for (const [name, usage] of Object.entries(resources)) {
    if (name === 'memory' || name === 'object_store_memory') {
      if (name === 'memory') {
        parts.push(`memory ${formatBytes(usage.used)} of ${formatBytes(usage.total)}`);
      }
      continue;
    }
    if (name === 'GPU' && usage.total === 0) {
      continue;
    }
    parts.push(`${name} ${trim(usage.used)}/${trim(usage.total)}`);
  }
  return parts.join(' · ');
}

function trim(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** 75 -> "1 min 15 s"; 3600 -> "1 h". */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const rest = s % 60;
    return rest ? `${m} min ${rest} s` : `${m} min`;
  }
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return m ? `${h} h ${m} min` : `${h} h`;
}

/** What `GET redspot/api/idle` answers (redspot/serverextension/idle.py). */
export interface IIdle {
  timeout: number;
  idle: number;
  stops_in: number | null;
  warn: boolean;
  warn_before: number;
  kernels: number;
}

/** The warning shown a few minutes before an idle server stops itself. */
export function idleWarning(state: IIdle): string {
  const left = state.stops_in ?? 0;
  const when = left < 60 ? 'in under a minute' : `in about ${formatDuration(Math.ceil(left / 60) * 60)}`;
  const kernels = state.kernels
    ? ` Its ${state.kernels === 1 ? 'kernel stops' : `${state.kernels} kernels stop`} with it: save your work.`
    : '';
  return (
    `This server has been idle for ${formatDuration(Math.floor(state.idle / 60) * 60 || state.idle)} ` +
    `and stops itself ${when} (its idle limit is ${formatDuration(state.timeout)}).${kernels}`
  );
}

/** How often to ask: often enough to warn in time, rarely when nothing stops it. */
export function idlePollInterval(state: IIdle | null): number {
  if (!state || !state.timeout) {
    return 60_000;
  }
  return Math.max(5_000, Math.min(30_000, (state.warn_before * 1000) / 4));
}

/** How long ago a time (seconds since the epoch) was, from `now` (milliseconds). */
export function ago(when: number | null, now: number = Date.now()): string {
  if (when === null) {
    return '';
  }
  return `${formatDuration(Math.max(0, now / 1000 - when))} ago`;
}

/** A SQL identifier, quoted only when it must be (standard SQL double quotes). */
export function quoteIdentifier(name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

/** The `%%sql` cell "insert a cell" puts in the notebook for a table. */
export function sqlCell(connection: string, schema: string | null, table: string, limit = 100): string {
  const qualified = (schema ? [schema, table] : [table]).map(quoteIdentifier).join('.');
  return `%%sql ${connection}\nSELECT *\nFROM ${qualified}\nLIMIT ${limit}`;
}

const ENV_STATES: { [state: string]: string } = {
  queued: 'queued',
  building: 'building…',
  ready: 'ready',
  failed: 'failed'
};

export function environmentStateLabel(state: string): string {
  return ENV_STATES[state] ?? state;
}

/** Whether an environment's build is still going (the panel polls faster meanwhile). */
export function isBuilding(environments: IEnvironment[]): boolean {
  return environments.some(e => e.mine && (e.state === 'queued' || e.state === 'building'));
}

/** "latest v3 · champion: v2" */
export function describeModel(model: IModel): string {
  const parts: string[] = [];
  if (model.latest_version) {
    parts.push(`latest v${model.latest_version}`);
  }
  for (const [alias, version] of Object.entries(model.aliases).sort()) {
    parts.push(`${alias}: v${version}`);
  }
  return parts.join(' · ') || 'no version yet';
}

/** A grantee as the sharing service takes it: "bob" or "group:vision". */
export function grantee(kind: 'user' | 'group', name: string): string {
  return kind === 'group' ? `group:${name}` : name;
}

/** Who a share is with, as people read it. */
export function describeGrantee(value: string): string {
  return value.startsWith('group:') ? `group ${value.slice('group:'.length)}` : value;
}

/** A path in the file browser, as the sharing service takes it (relative to the home). */
export function sharePath(path: string): string {
  return path.replace(/^\/+/, '').replace(/\/+$/, '');
}

