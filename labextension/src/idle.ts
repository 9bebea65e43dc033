/**
 * The warning a few minutes before an idle server stops itself (Redspot's `culling:`):
 * asked of `redspot/api/idle`, which does not count as use; "Keep it running" does.
 */
import { Notification } from '@jupyterlab/apputils';

import { requestAPI } from './api';
import { IIdle, idlePollInterval, idleWarning } from './format';

export class IdleWarning {
  start(): void {
    void this.check();
  }

  private async check(): Promise<void> {
    let state: IIdle | null = null;
    try {
      state = await requestAPI<IIdle>('idle');
    } catch {
      // an older server, or a moment without answer: ask again later
    }
    if (state?.warn) {
      this.show(state);
    } else if (this.id) {
      Notification.dismiss(this.id);
      this.id = null;
    }
    window.setTimeout(() => void this.check(), idlePollInterval(state));
  }

  private show(state: IIdle): void {
    const message = idleWarning(state);
    const actions = [{
      label: 'Keep it running',
      caption: 'Counts as use: the idle time starts again',
      callback: () => {
        void requestAPI('idle', { method: 'POST' }).then(() => {
          this.id = null;
          void this.check();
        });
      }
    }];
    if (this.id) {
      Notification.update({ id: this.id, message, type: 'warning', actions, autoClose: false });
    } else {
      this.id = Notification.warning(message, { autoClose: false, actions });
    }
  }

  private id: string | null = null;
}
