/** The status bar's Ray item: the cluster's state and what it uses; a click opens the panel. */
import { Widget } from '@lumino/widgets';

import { describeResources, IUsage, rayStateLabel } from './format';
import { RedspotModel } from './model';

/** CPUs and GPUs only: the status bar has little room. */
function compute(resources: { [name: string]: IUsage }): { [name: string]: IUsage } {
  const shown: { [name: string]: IUsage } = {};
  for (const name of ['CPU', 'GPU']) {
    if (resources[name]) {
      shown[name] = resources[name];
    }
  }
  return shown;
}

export class RayStatus extends Widget {
  constructor(model: RedspotModel, onClick: () => void) {
    super({ node: document.createElement('button') });
    this.addClass('rs-RayStatus');
    this.addClass('jp-StatusBar-TextItem');
    this.node.setAttribute('type', 'button');
    this.node.addEventListener('click', onClick);
    model.ray.changed.connect(() => {
      const ray = model.ray.value;
      const text = ray
        ? `Ray: ${rayStateLabel(ray)}` +
          (ray.state === 'running' ? ` · ${describeResources(compute(ray.resources))}` : '')
        : 'Ray: ?';
      this.node.textContent = text;
      this.node.setAttribute('aria-label', `${text}. Open the Redspot panel`);
      this.node.dataset.state = ray?.state ?? 'unknown';
    }, this);
    this.node.textContent = 'Ray: …';
  }
}
