/** Modal <dialog>s: a confirmation (Confirm / Cancel) and a form dialog that stays open on errors.
 * Focus goes back to the control that opened the dialog. */

import { h, uid, messageBox } from './dom.js';

function open(dialog, onClose) {
  const opener = document.activeElement;
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (opener && opener.isConnected) opener.focus();
    else document.querySelector('main h1')?.focus();
    onClose(dialog.returnValue);
  });
  document.body.append(dialog);
  dialog.showModal();
}

/** Ask before doing something: resolves true on "Confirm", false on "Cancel" or Escape. */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', danger = true }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const textId = uid('dialog-text');
    const cancel = h('button', { type: 'submit', value: 'cancel', text: 'Cancel' });
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId, 'aria-describedby': textId },
      h('h2', { id: titleId, text: title }),
      h('p', { id: textId, text: message }),
      h('form', { method: 'dialog', class: 'actions' },
        cancel,
        h('button', { type: 'submit', value: 'confirm', class: danger ? 'danger' : 'primary', text: confirmLabel })));
    open(dialog, (value) => resolve(value === 'confirm'));
    cancel.focus();
  });
}

/** A dialog with a form: `fields` (nodes), a submit button `submitLabel` and "Cancel". onSubmit(form)
 * runs on submit; the dialog closes when it resolves, and shows the error when it throws. Resolves with
 * onSubmit's result, or null when cancelled. */
export function formDialog({ title, fields, submitLabel = 'Save', onSubmit }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const messages = messageBox();
    const submit = h('button', { type: 'submit', class: 'primary', text: submitLabel });
    let result = null;
    const form = h('form', { class: 'stack' }, fields, messages, h('div', { class: 'actions' },
      h('button', { type: 'button', text: 'Cancel', onclick: () => dialog.close('cancel') }), submit));
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId },
      h('h2', { id: titleId, text: title }), form);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      submit.disabled = true;
      messages.show('Saving…');
      try {
        result = await onSubmit(form);
        dialog.close('done');
      } catch (error) {
        messages.show(error.message, 'error');
      } finally {
        submit.disabled = false;
      }
    });
    open(dialog, () => resolve(result));
    form.querySelector('input, select, textarea')?.focus();
  });
}
