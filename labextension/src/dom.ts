/** A small element builder for the panel's views (no framework). */

type Child = Node | string | null | undefined | false;

export interface IAttrs {
  [name: string]: string | number | boolean | EventListener | null | undefined;
}

/**
 * `h('button', {class: 'x', onclick: f, 'aria-label': 'Stop'}, 'Stop')`: attributes
 * starting with "on" become listeners; false, null and undefined ones are left out.
 */
export function h(tag: string, attrs: IAttrs = {}, ...children: Child[]): HTMLElement {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value as EventListener);
    } else {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Replace what `parent` shows. */
export function show(parent: HTMLElement, ...children: Child[]): void {
  parent.replaceChildren(
    ...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false)
  );
}
