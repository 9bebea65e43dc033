/** What the panel, the status bar and the commands share: one poller per endpoint. */
import { requestAPI } from './api';
import {
  IConnection,
  IEnvironment,
  IInfo,
  IModel,
  IRay,
  IShares,
  isBuilding
} from './format';
import { Poller } from './poller';

/** jupyter-resource-usage's answer (`api/metrics/v1`). */
export interface IMetrics {
  rss: number;
  cpu_percent?: number;
  cpu_count?: number;
  limits: { memory?: { rss: number }; cpu?: { cpu: number } };
}

export class RedspotModel {
  readonly info = new Poller<IInfo>(() => requestAPI<IInfo>('info'), 60_000);
  readonly ray = new Poller<IRay>(
    () => requestAPI<IRay>('ray'),
    5_000,
    1_000,
    ray => ray.state === 'starting' || ray.state === 'stopping'
  );
  readonly environments = new Poller<{ environments: IEnvironment[] }>(
    () => requestAPI('environments'),
    30_000,
    3_000,
    value => isBuilding(value.environments)
  );
  readonly models = new Poller<{ models: IModel[] }>(() => requestAPI('models'), 60_000);
  readonly connections = new Poller<{ connections: IConnection[] }>(
    () => requestAPI('warehouse'),
    300_000
  );
  readonly shares = new Poller<IShares>(() => requestAPI<IShares>('shares'), 15_000);

  /** Start or stop my Ray cluster; the poller follows what happens. */
  async ray_action(action: 'start' | 'stop'): Promise<void> {
    await requestAPI('ray', { method: 'POST', body: JSON.stringify({ action }) });
    await this.ray.refresh();
  }

  dispose(): void {
    for (const poller of [
      this.info,
      this.ray,
      this.environments,
      this.models,
      this.connections,
      this.shares
    ]) {
      poller.stop();
    }
  }
}
