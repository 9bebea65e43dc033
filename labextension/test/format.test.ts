import {
  ago,
  describeGrantee,
  describeModel,
  describeProfile,
  describeResources,
  formatBytes,
  formatDuration,
  grantee,
  IEnvironment,
  IRay,
  isBuilding,
  quoteIdentifier,
  rayStateLabel,
  sharePath,
  sqlCell,
  idlePollInterval,
  idleWarning
} from '../src/format';

const GiB = 1024 ** 3;

function ray(overrides: Partial<IRay>): IRay {
  return {
    kind: 'local', name: 'your Ray cluster', state: 'running', can_start: true,
    dashboard: 'redspot/ray/dashboard/', nodes: 1, resources: {}, idle_seconds: 0,
    idle_timeout: 3600, runs: [], error: null, ...overrides
  };
}

describe('sizes and times', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(16 * GiB)).toBe('16 GiB');
    expect(formatBytes(1.25 * GiB)).toBe('1.3 GiB');
    expect(formatBytes(null)).toBe('?');
    expect(formatBytes(-1)).toBe('?');
  });

  it('formats durations', () => {
    expect(formatDuration(42)).toBe('42 s');
    expect(formatDuration(75)).toBe('1 min 15 s');
    expect(formatDuration(120)).toBe('2 min');
    expect(formatDuration(3600)).toBe('1 h');
    expect(formatDuration(5400)).toBe('1 h 30 min');
    expect(ago(1000, 1_075_000)).toBe('1 min 15 s ago');
    expect(ago(null)).toBe('');
  });
});

describe('the machine', () => {
  it('describes a profile', () => {
    expect(describeProfile({ name: 'g5.xlarge', cpus: 4, memory: 16 * GiB, gpus: 1, gpu_model: 'A10G' }))
      .toBe('g5.xlarge: 4 vCPUs, 16 GiB, 1 GPU (A10G)');
    expect(describeProfile({ name: 'tiny', cpus: 1, memory: null, gpus: 0, gpu_model: null }))
      .toBe('tiny: 1 vCPU');
    expect(describeProfile({ name: null, cpus: null, memory: null, gpus: null, gpu_model: null }))
      .toBe('no profile');
  });
});

describe('the Ray cluster', () => {
  it('says its state, and when an idle one stops', () => {
    expect(rayStateLabel(ray({ state: 'stopped' }))).toBe('stopped');
    expect(rayStateLabel(ray({ state: 'starting' }))).toBe('starting…');
    expect(rayStateLabel(ray({ state: 'starting', expected_seconds: 14.2 })))
      .toBe('starting… (about 14 s, as last time)');
    expect(rayStateLabel(ray({ idle_seconds: 10 }))).toBe('running');
    expect(rayStateLabel(ray({ idle_seconds: 3500 }))).toBe('idle, stopping in 1 min 40 s');
    // a run in progress keeps it busy, whatever the clock says
    const run = { kind: 'remote' as const, id: '1', name: 'cell', state: 'RUNNING', started: null, progress: null };
    expect(rayStateLabel(ray({ idle_seconds: 3500, runs: [run] }))).toBe('running');
    expect(rayStateLabel(ray({ idle_timeout: 0, idle_seconds: 3500 }))).toBe('running');
  });

  it('says what is in use of what it has', () => {
    expect(describeResources({
      CPU: { used: 1, total: 4 }, GPU: { used: 0, total: 0 },
      memory: { used: GiB, total: 8 * GiB }, object_store_memory: { used: 0, total: GiB }
    })).toBe('CPU 1/4 · memory 1 GiB of 8 GiB');
    expect(describeResources({ CPU: { used: 0.5, total: 2 }, GPU: { used: 1, total: 1 } }))
      .toBe('CPU 0.5/2 · GPU 1/1');
  });
});

describe('environments and models', () => {
  const env = (state: string, mine = true): IEnvironment =>
    ({ id: `alice/${state}`, owner: 'alice', name: state, state, mine, updated: null, error: null });

  it('knows when one of mine is building', () => {
    expect(isBuilding([env('ready'), env('failed')])).toBe(false);
    expect(isBuilding([env('ready'), env('building')])).toBe(true);
    expect(isBuilding([env('queued')])).toBe(true);
    expect(isBuilding([env('building', false)])).toBe(false);
  });

  it('describes a model by its latest version and aliases', () => {
    const model = { name: 'churn', owner: 'alice', mine: true, private: false, url: '' };
    expect(describeModel({ ...model, latest_version: '3', aliases: { staging: '3', champion: '2' } }))
      .toBe('latest v3 · champion: v2 · staging: v3');
    expect(describeModel({ ...model, latest_version: null, aliases: {} })).toBe('no version yet');
  });
});

describe('the warehouse', () => {
  it('quotes identifiers only when it must', () => {
    expect(quoteIdentifier('listings')).toBe('listings');
    expect(quoteIdentifier('My Table')).toBe('"My Table"');
    expect(quoteIdentifier('a"b')).toBe('"a""b"');
    expect(quoteIdentifier('1st')).toBe('"1st"');
  });

  it('writes the %%sql cell for a table', () => {
    expect(sqlCell('demo', 'main', 'listings')).toBe('%%sql demo\nSELECT *\nFROM main.listings\nLIMIT 100');
    expect(sqlCell('wh', null, 'odd name', 10)).toBe('%%sql wh\nSELECT *\nFROM "odd name"\nLIMIT 10');
  });
});

describe('sharing', () => {
  it('names grantees as the sharing service takes them', () => {
    expect(grantee('user', 'bob')).toBe('bob');
    expect(grantee('group', 'vision')).toBe('group:vision');
    expect(describeGrantee('group:vision')).toBe('group vision');
    expect(describeGrantee('bob')).toBe('bob');
  });

  it('takes a file browser path as a path in the home', () => {
    expect(sharePath('/notebooks/plan.ipynb')).toBe('notebooks/plan.ipynb');
    expect(sharePath('data/')).toBe('data');
    expect(sharePath('')).toBe('');
  });
});

describe('the idle warning', () => {
  const state = { timeout: 3600, idle: 3420, stops_in: 180, warn: true, warn_before: 300, kernels: 2 };

  it('says how long the server was idle, when it stops, and that its kernels go too', () => {
    expect(idleWarning(state)).toBe(
      'This server has been idle for 57 min and stops itself in about 3 min (its idle ' +
        'limit is 1 h). Its 2 kernels stop with it: save your work.'
    );
    expect(idleWarning({ ...state, stops_in: 20, kernels: 0 })).toBe(
      'This server has been idle for 57 min and stops itself in under a minute (its ' +
        'idle limit is 1 h).'
    );
    expect(idleWarning({ ...state, timeout: 40, idle: 25, stops_in: 15, kernels: 1 })).toContain(
      'idle for 25 s and stops itself in under a minute (its idle limit is 40 s). Its kernel stops'
    );
  });

  it('asks often enough to warn in time', () => {
    expect(idlePollInterval(null)).toBe(60_000);
    expect(idlePollInterval({ ...state, timeout: 0 })).toBe(60_000);
    expect(idlePollInterval(state)).toBe(30_000);
    expect(idlePollInterval({ ...state, warn_before: 20 })).toBe(5_000);
  });
});
