/**
 * Redspot in JupyterLab: a sidebar panel (machine, Ray cluster, environments, models,
 * data, shares), Share… in the file browser, the Ray cluster in the status bar, and a
 * command for every action.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { serverURL } from './api';
import { sqlCell } from './format';
import { RedspotModel } from './model';
import { IdleWarning } from './idle';
import { COMMANDS, RedspotPanel } from './panel';
import { shareDialog } from './share';
import { RayStatus } from './status';

const ICON = new LabIcon({
  name: 'redspot:logo',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">' +
    '<circle class="jp-icon3" cx="12" cy="12" r="9" fill="#616161"/>' +
    '<ellipse cx="14.5" cy="13.5" rx="4" ry="2.6" fill="#d84315"/></svg>'
});

const CATEGORY = 'Redspot';

function notifyFailure(what: string) {
  return (error: unknown) =>
    Notification.error(`${what}: ${(error as Error).message ?? error}`, { autoClose: 8000 });
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@redspot/labextension:plugin',
  description: 'Redspot in JupyterLab: the platform in the sidebar',
  autoStart: true,
  requires: [ILabShell],
  optional: [ICommandPalette, IDefaultFileBrowser, INotebookTracker, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null,
    notebooks: INotebookTracker | null,
    statusBar: IStatusBar | null
  ) => {
    const { commands } = app;
    const model = new RedspotModel();
    const panel = new RedspotPanel(model, commands);
    panel.title.icon = ICON;
    shell.add(panel, 'left', { rank: 150 });

    const open = (url: string | undefined) => {
      if (url) {
        window.open(url, '_blank', 'noopener');
      }
    };

    commands.addCommand(COMMANDS.openPanel, {
      label: 'Show the Redspot panel',
      execute: () => shell.activateById(panel.id)
    });
    commands.addCommand(COMMANDS.refresh, {
      label: 'Refresh the Redspot panel',
      execute: () => panel.refresh()
    });
    commands.addCommand(COMMANDS.rayStart, {
      label: 'Start my Ray cluster',
      isEnabled: () => {
        const ray = model.ray.value;
        return !ray || (ray.can_start && ['stopped', 'unknown'].includes(ray.state));
      },
      execute: () => model.ray_action('start').catch(notifyFailure('Starting the Ray cluster'))
    });
    commands.addCommand(COMMANDS.rayStop, {
      label: 'Stop my Ray cluster',
      isEnabled: () => {
        const ray = model.ray.value;
        return !ray || (ray.can_start && ['running', 'starting'].includes(ray.state));
      },
      execute: () => model.ray_action('stop').catch(notifyFailure('Stopping the Ray cluster'))
    });
    commands.addCommand(COMMANDS.rayDashboard, {
      label: 'Open the Ray dashboard',
      execute: () => {
        const ray = model.ray.value;
        open(ray?.dashboard ? serverURL(ray.dashboard) : undefined);
      }
    });
    commands.addCommand(COMMANDS.environments, {
      label: 'Open the environments page',
      execute: () => open(model.info.value?.links.environments)
    });
    commands.addCommand(COMMANDS.registry, {
      label: 'Open the model registry',
      execute: () => open(model.info.value?.links.models)
    });
    commands.addCommand(COMMANDS.share, {
      label: 'Share…',
      caption: 'Share read-only with a user or group, or invite them into this server',
      execute: async args => {
        let path = args.path as string | undefined;
        if (path === undefined && browser) {
          const item = browser.selectedItems().next();
          path = item && !item.done ? item.value.path : browser.model.path;
        }
        await shareDialog(path ?? '', () => {
          void model.shares.refresh();
          Notification.success(`Shared ${path}`, { autoClose: 4000 });
        }).catch(notifyFailure('Sharing'));
      }
    });
    commands.addCommand(COMMANDS.openShared, {
      label: 'Open a file shared with me',
      execute: args => commands.execute('docmanager:open', { path: args.path as string })
    });
    commands.addCommand(COMMANDS.insertSql, {
      label: 'Insert a %%sql cell for a table',
      execute: args => {
        const notebook = notebooks?.currentWidget;
        if (!notebook) {
          Notification.warning('Open a notebook first: the %%sql cell goes into it.');
          return;
        }
        const source = sqlCell(args.connection as string, (args.schema as string) || null,
          args.table as string);
        NotebookActions.insertBelow(notebook.content);
        const cell = notebook.content.activeCell;
        if (cell) {
          cell.model.sharedModel.setSource(source);
        }
        shell.activateById(notebook.id);
      }
    });

    app.contextMenu.addItem({
      command: COMMANDS.share,
      selector: '.jp-DirListing-item[data-isdir]',
      rank: 10
    });

    if (palette) {
      for (const command of [COMMANDS.openPanel, COMMANDS.refresh, COMMANDS.rayStart,
        COMMANDS.rayStop, COMMANDS.rayDashboard, COMMANDS.environments, COMMANDS.registry,
        COMMANDS.share]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    if (statusBar) {
      statusBar.registerStatusItem('redspot:ray', {
        item: new RayStatus(model, () => shell.activateById(panel.id)),
        align: 'left',
        rank: 5
      });
    }
    // the status bar follows the cluster even while the panel is closed
    model.ray.start();
    // a few minutes before an idle server stops itself, its user is told
    new IdleWarning().start();
  }
};

export default plugin;
