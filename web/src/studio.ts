// /studio: the seller's side. A shop with its products (variants, prices,
// stock, images), rooms (the RTMP address and stream key, a preview with the
// stream's health, pinning, flash sales, chat moderation, ending), the shop's
// orders (fulfil, refund) and its settings (the sites that may embed the player).
import './style.css';
import { call, del, describe, get, patch, post, put } from './api';
import { createChat } from './chat';
import { createPlayer, type Player } from './player';
import { me, mountHeader, signInPrompt } from './session';
import { RoomSocket } from './socket';
import type { ChatMessage, FlashSale, Order, Page, PinnedCard, Product, Room, RoomStats, Shop, StreamStats } from './types';
import { act, clock, copyButton, decimal, field, fill, h, money, notice, parseMoney, time } from './ui';

const main = h('main', { class: 'studio' });
document.body.append(main);
void mountHeader();

let shop: Shop;
let cleanup: (() => void)[] = [];
const enc = encodeURIComponent;

function tabs(current: string): HTMLElement {
  const tab = (hash: string, label: string) => h('a', { href: `#${hash}`, 'aria-current': current === hash ? 'page' : null }, label);
  return h('nav', { class: 'tabs', 'aria-label': 'Studio' }, tab('rooms', 'Rooms'), tab('products', 'Products'), tab('orders', 'Orders'), tab('settings', 'Settings'));
}

async function route(): Promise<void> {
  cleanup.forEach((stop) => stop());
  cleanup = [];
  const account = await me();
  if (!account) {
    signInPrompt(main, 'Studio', 'Sign in or create an account to open your shop and go live.');
    return;
  }
  if (!account.shops.length) {
    fill(main, h('h1', {}, 'Open your shop'), createShopForm());
    return;
  }
  shop = account.shops[0];
  const [view, id] = location.hash.slice(1).split('/');
  const body = h('div', {});
  fill(main, h('h1', {}, shop.name, h('small', { class: 'muted' }, ` @${shop.handle}`)), tabs(view === 'room' ? 'rooms' : view || 'rooms'), body);
  if (view === 'room' && id) await roomView(body, id);
  else if (view === 'products') await productsView(body);
  else if (view === 'orders') await ordersView(body);
  else if (view === 'settings') settingsView(body);
  else await roomsView(body);
}

function createShopForm(): HTMLElement {
  const handle = h('input', { name: 'handle', required: true, minlength: 3, maxlength: 32, pattern: '[a-z0-9-]+' });
  const name = h('input', { name: 'name', required: true, maxlength: 80 });
  const currency = h('input', { name: 'currency', required: true, value: 'EUR', maxlength: 3, pattern: '[A-Za-z]{3}' });
  const description = h('textarea', { name: 'description', rows: 3 });
  const out = h('p', {});
  const form = h(
    'form',
    { class: 'panel' },
    field('Shop name', name),
    field('Handle', handle, 'Lower-case letters, digits and hyphens; your shop\'s address.'),
    field('Currency', currency, 'ISO code such as EUR or USD; every price of the shop is in it.'),
    field('Description', description),
    out,
    h('button', { type: 'submit' }, 'Open shop'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(form.querySelector('button'), out, async () => {
      await post('/api/v1/shops', { handle: handle.value, name: name.value, currency: currency.value.toUpperCase(), description: description.value });
      location.reload();
    });
  });
  return form;
}

// ---- Products ----

async function productsView(body: HTMLElement): Promise<void> {
  const products = await get<Page<Product>>(`/api/v1/shops/${enc(shop.id)}/products?limit=100`);
  const table = h(
    'table',
    {},
    h('thead', {}, h('tr', {}, h('th', {}, 'Product'), h('th', {}, 'Status'), h('th', {}, 'Variants (price, stock)'))),
    h(
      'tbody',
      {},
      products.items.map((p) =>
        h(
          'tr',
          {},
          h('td', {}, p.images[0] ? h('img', { src: `/images/${p.images[0]}`, alt: '', width: 48, height: 48 }) : null, ' ', p.title, productEditor(p)),
          h('td', {}, statusToggle(p)),
          h('td', {}, h('ul', {}, p.variants.map((v) => h('li', {}, `${v.sku} ${Object.values(v.options).join('/')}: ${money(v.price)}, `, stockEditor(v.id, v.stock_on_hand))))),
        ),
      ),
    ),
  );
  fill(body, h('section', { class: 'panel' }, h('h2', {}, 'New product'), productForm()), h('section', { class: 'panel' }, h('h2', {}, 'Products'), products.items.length ? table : h('p', { class: 'muted' }, 'No products yet.')));
}

/** Renaming, images, prices and new variants of one product. */
function productEditor(product: Product): HTMLElement {
  const title = h('input', { name: 'edit-title', value: product.title, required: true, maxlength: 200 });
  const description = h('textarea', { name: 'edit-description', rows: 2 });
  description.value = product.description;
  const image = h('input', { type: 'file', name: 'edit-image', accept: 'image/jpeg,image/png,image/webp' });
  const out = h('p', {});
  const save = h('button', { type: 'button' }, 'Save product');
  save.addEventListener('click', () =>
    void act(save, out, async () => {
      const images = [...product.images];
      const file = image.files?.[0];
      if (file) images.push(await uploadImage(file));
      await patch(`/api/v1/products/${enc(product.id)}`, { title: title.value, description: description.value, images });
      await route();
    }),
  );
  const prices = product.variants.map((v) => {
    const price = h('input', { name: 'edit-price', inputmode: 'decimal', value: decimal(v.price.amount, v.price.currency), 'aria-label': `Price of ${v.sku} (${shop.currency})` });
    const button = h('button', { type: 'button', class: 'mini' }, 'Save price');
    button.addEventListener('click', () =>
      void act(button, out, async () => {
        const amount = parseMoney(price.value, shop.currency);
        await patch(`/api/v1/variants/${enc(v.id)}`, { price: amount });
        notice(out, `${v.sku}: ${money(amount)}.`, 'ok');
      }),
    );
    return h('div', { class: 'row' }, h('span', {}, v.sku), price, button);
  });
  const sku = h('input', { name: 'new-sku', placeholder: 'SKU', 'aria-label': 'New variant SKU' });
  const options = h('input', { name: 'new-options', placeholder: 'size=L', 'aria-label': 'New variant options' });
  const price = h('input', { name: 'new-price', placeholder: 'Price', inputmode: 'decimal', 'aria-label': `New variant price (${shop.currency})` });
  const stock = h('input', { name: 'new-stock', type: 'number', min: 0, value: '0', 'aria-label': 'New variant stock' });
  const add = h('button', { type: 'button', class: 'secondary' }, 'Add variant');
  add.addEventListener('click', () =>
    void act(add, out, async () => {
      await post(`/api/v1/products/${enc(product.id)}/variants`, {
        sku: sku.value,
        options: parseOptions(options.value),
        price: parseMoney(price.value, shop.currency),
        stock: Number(stock.value) || 0,
      });
      await route();
    }),
  );
  return h(
    'details',
    { class: 'editor' },
    h('summary', {}, 'Edit'),
    field('Title', title),
    field('Description', description),
    field('Add an image', image),
    save,
    h('h4', {}, 'Prices'),
    prices,
    h('h4', {}, 'New variant'),
    h('div', { class: 'row' }, sku, options, price, stock, add),
    out,
  );
}

/** Uploads an image to the shop; its id goes into a product's `images`. */
async function uploadImage(file: File): Promise<string> {
  return (await call<{ id: string }>('POST', `/api/v1/shops/${enc(shop.id)}/images`, undefined, { raw: file })).body.id;
}

/** One labelled figure in a grid of stats. */
function stat(label: string, value: string): HTMLElement {
  return h('div', {}, label, h('b', {}, value));
}

function parseOptions(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split(',')
      .map((pair) => pair.split('=').map((part) => part.trim()))
      .filter(([key, value]) => key && value),
  );
}

function statusToggle(product: Product): HTMLElement {
  const select = h('select', { 'aria-label': `Status of ${product.title}` }, ['active', 'draft', 'archived'].map((s) => h('option', { value: s, selected: s === product.status }, s)));
  const out = h('span', {});
  select.addEventListener('change', () => void act(null, out, async () => void (await patch(`/api/v1/products/${enc(product.id)}`, { status: select.value }))));
  return h('span', {}, select, out);
}

function stockEditor(variantId: string, onHand: number): HTMLElement {
  const count = h('strong', {}, String(onHand));
  const delta = h('input', { type: 'number', step: 1, 'aria-label': 'Units to add or remove', class: 'narrow', value: '' });
  delta.style.width = '6rem';
  const button = h('button', { type: 'button', class: 'mini' }, 'Adjust');
  const out = h('span', {});
  button.addEventListener('click', () =>
    void act(button, out, async () => {
      const n = Number(delta.value);
      const line = await post<{ on_hand_after: number }>(`/api/v1/variants/${enc(variantId)}/stock-adjustments`, { delta: n, reason: n > 0 ? 'received' : 'correction' });
      count.textContent = String(line.on_hand_after);
      delta.value = '';
    }),
  );
  return h('span', {}, count, ' in stock ', delta, button, out);
}

function productForm(): HTMLElement {
  const title = h('input', { name: 'title', required: true, maxlength: 200 });
  const description = h('textarea', { name: 'description', rows: 2 });
  const image = h('input', { type: 'file', name: 'image', accept: 'image/jpeg,image/png,image/webp' });
  const active = h('input', { type: 'checkbox', name: 'active', checked: true });
  active.style.width = 'auto';
  const rows = h('div', {});
  const addRow = () => {
    const n = rows.childElementCount + 1;
    rows.append(
      h(
        'fieldset',
        { class: 'row variant' },
        h('legend', {}, `Variant ${n}`),
        field('SKU', h('input', { name: 'sku', required: true })),
        field('Options', h('input', { name: 'options', placeholder: 'size=M, colour=red' })),
        field(`Price (${shop.currency})`, h('input', { name: 'price', required: true, inputmode: 'decimal' })),
        field('Stock', h('input', { name: 'stock', type: 'number', min: 0, value: '10' })),
      ),
    );
  };
  addRow();
  const more = h('button', { type: 'button', class: 'secondary' }, 'Add a variant');
  more.addEventListener('click', addRow);
  const out = h('p', {});
  const form = h('form', {}, field('Title', title), field('Description', description), field('Image', image, 'JPEG, PNG or WebP.'), rows, more, h('label', { class: 'row' }, active, 'Active: buyers can see and buy it'), out, h('button', { type: 'submit' }, 'Create product'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(form.querySelector('button[type=submit]'), out, async () => {
      const images: string[] = [];
      const file = image.files?.[0];
      if (file) images.push(await uploadImage(file));
      const variants = [...rows.querySelectorAll('fieldset')].map((set) => {
        const value = (name: string) => (set.querySelector(`[name=${name}]`) as HTMLInputElement).value;
        return { sku: value('sku'), options: parseOptions(value('options')), price: parseMoney(value('price'), shop.currency), stock: Number(value('stock')) || 0 };
      });
      await post('/api/v1/shops/' + enc(shop.id) + '/products', { title: title.value, description: description.value, status: active.checked ? 'active' : 'draft', images, variants });
      await route();
    });
  });
  return form;
}

// ---- Rooms ----

async function roomsView(body: HTMLElement): Promise<void> {
  const rooms = await get<Page<Room>>(`/api/v1/shops/${enc(shop.id)}/rooms?limit=50`);
  const title = h('input', { name: 'title', required: true, maxlength: 200 });
  const when = h('input', { type: 'datetime-local', name: 'scheduled_start' });
  const out = h('p', {});
  const form = h('form', {}, field('Title', title), field('Scheduled start (optional)', when), out, h('button', { type: 'submit' }, 'Create room'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(form.querySelector('button'), out, async () => {
      const created = await post<{ room: Room; stream_key: string; publish_url: string }>(`/api/v1/shops/${enc(shop.id)}/rooms`, {
        title: title.value,
        scheduled_start: when.value ? new Date(when.value).toISOString() : undefined,
      });
      freshKey = { room: created.room.id, key: created.stream_key, url: created.publish_url };
      location.hash = `room/${created.room.id}`;
    });
  });
  const list = h(
    'ul',
    { class: 'rooms' },
    rooms.items.map((r) =>
      h(
        'li',
        { class: `room-card ${r.status}` },
        h('a', { href: `#room/${r.id}` }, h('strong', {}, r.title), h('span', { class: 'muted' }, r.status === 'live' ? 'LIVE' : r.status === 'ended' ? `Ended ${r.ended_at ? time(r.ended_at) : ''}` : r.scheduled_start ? `Starts ${time(r.scheduled_start)}` : 'Not live')),
      ),
    ),
  );
  fill(body, h('section', { class: 'panel' }, h('h2', {}, 'New room'), form), h('section', { class: 'panel' }, h('h2', {}, 'Rooms'), rooms.items.length ? list : h('p', { class: 'muted' }, 'No rooms yet.')));
}

/** The key from the last creation or rotation: the API shows it only then. */
let freshKey: { room: string; key: string; url: string } | null = null;

async function roomView(body: HTMLElement, roomId: string): Promise<void> {
  const room = await get<Room>(`/api/v1/rooms/${enc(roomId)}`);
  const products = (await get<Page<Product>>(`/api/v1/shops/${enc(shop.id)}/products?limit=100`)).items.filter((p) => p.status === 'active');
  const ended = room.status === 'ended';
  const roomUrl = `${location.origin}/r/${enc(room.id)}`;
  const preview = createPlayer();
  const stats = h('div', { class: 'stats', 'aria-live': 'polite' });
  const viewers = h('b', {}, '0');
  const pinnedNow = h('p', {}, 'Nothing pinned.');
  const salesBox = h('div', {});
  const chat = createChat({
    room: room.id,
    send: null,
    signIn: async () => true,
    appoint: async (userId) => {
      await put(`/api/v1/shops/${enc(shop.id)}/moderators/${enc(userId)}`, {});
      await loadModeration();
    },
  });
  const account = await me();
  chat.setViewer(account?.user.id ?? null, true);

  // Stream key and address.
  const keyBox = h('div', {});
  const showKey = () => {
    if (freshKey && freshKey.room === room.id) {
      const { key, url } = freshKey;
      fill(
        keyBox,
        h('p', {}, 'In OBS: Settings → Stream → Service "Custom…". This key is shown only now: copy it.'),
        field('Server', h('input', { readonly: true, value: url, name: 'rtmp-server' })),
        copyButton('Copy server', () => url),
        field('Stream key', h('input', { readonly: true, value: key, name: 'stream-key', class: 'secret' })),
        copyButton('Copy stream key', () => key),
      );
    } else {
      fill(keyBox, h('p', { class: 'muted' }, 'The stream key is shown once, when the room is created or the key rotated. Lost it? Rotate it; the old key stops working.'));
    }
  };
  showKey();
  const rotate = h('button', { type: 'button', class: 'secondary' }, 'Rotate stream key');
  const keyOut = h('p', {});
  rotate.addEventListener('click', () =>
    void act(rotate, keyOut, async () => {
      const rotated = await post<{ stream_key: string; publish_url: string }>(`/api/v1/rooms/${enc(room.id)}/stream-key`);
      freshKey = { room: room.id, key: rotated.stream_key, url: rotated.publish_url };
      showKey();
    }),
  );

  // Pin.
  const pinSelect = h('select', { 'aria-label': 'Product to pin', name: 'pin' }, products.map((p) => h('option', { value: p.id }, p.title)));
  const pinButton = h('button', { type: 'button' }, 'Pin');
  const unpinButton = h('button', { type: 'button', class: 'secondary' }, 'Unpin');
  const pinOut = h('p', {});
  pinButton.addEventListener('click', () => void act(pinButton, pinOut, async () => void (await put(`/api/v1/rooms/${enc(room.id)}/pin`, { product_id: pinSelect.value }))));
  unpinButton.addEventListener('click', () => void act(unpinButton, pinOut, () => del(`/api/v1/rooms/${enc(room.id)}/pin`)));

  // Flash sale.
  const variants = products.flatMap((p) => p.variants.map((v) => ({ product: p, variant: v })));
  const saleVariant = h('select', { name: 'sale-variant' }, variants.map(({ product, variant }) => h('option', { value: variant.id }, `${product.title} · ${variant.sku} (${money(variant.price)}, ${variant.stock_on_hand} in stock)`)));
  const salePrice = h('input', { name: 'sale-price', required: true, inputmode: 'decimal' });
  const saleQuantity = h('input', { name: 'sale-quantity', type: 'number', min: 1, required: true, value: '10' });
  const saleLimit = h('input', { name: 'sale-limit', type: 'number', min: 1, value: '1' });
  const saleMinutes = h('input', { name: 'sale-minutes', type: 'number', min: 1, value: '5' });
  const saleOut = h('p', {});
  const saleForm = h('form', {}, field('Variant', saleVariant), h('div', { class: 'row' }, field(`Sale price (${shop.currency})`, salePrice), field('Quantity', saleQuantity), field('Per buyer', saleLimit), field('Minutes', saleMinutes)), saleOut, h('button', { type: 'submit' }, 'Start flash sale'));
  saleForm.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(saleForm.querySelector('button'), saleOut, async () => {
      await post(`/api/v1/rooms/${enc(room.id)}/sales`, {
        variant_id: saleVariant.value,
        price: parseMoney(salePrice.value, shop.currency),
        quantity: Number(saleQuantity.value),
        per_buyer_limit: Number(saleLimit.value) || 1,
        duration_seconds: Math.round(Number(saleMinutes.value) * 60),
      });
      await loadSales();
    });
  });
  const saleOrders = new Map<string, number>();
  const loadSales = async () => {
    const sales = await get<Page<FlashSale>>(`/api/v1/rooms/${enc(room.id)}/sales?limit=20`);
    fill(
      salesBox,
      sales.items.length
        ? h(
            'table',
            {},
            h('thead', {}, h('tr', {}, h('th', {}, 'Sale'), h('th', {}, 'Status'), h('th', {}, 'Left'), h('th', {}, 'Orders'), h('th', {}, ''))),
            h(
              'tbody',
              {},
              sales.items.map((s) => {
                const v = variants.find((x) => x.variant.id === s.variant_id);
                const end = s.status === 'live' || s.status === 'scheduled' ? h('button', { type: 'button', class: 'mini' }, 'End') : null;
                end?.addEventListener('click', () => void act(end, saleOut, async () => void (await patch(`/api/v1/sales/${enc(s.id)}`, { status: 'ended' }), await loadSales())));
                return h(
                  'tr',
                  { 'data-sale': s.id },
                  h('td', {}, `${v ? v.product.title : s.variant_id} at ${money(s.price)}`),
                  h('td', { class: 'sale-status' }, s.status),
                  h('td', { class: 'sale-left' }, `${s.available} / ${s.quantity}`),
                  h('td', { class: 'sale-orders' }, String(saleOrders.get(s.id) ?? '…')),
                  h('td', {}, end),
                );
              }),
            ),
          )
        : h('p', { class: 'muted' }, 'No flash sales in this room yet.'),
    );
    for (const s of sales.items) {
      const orders = await get<Page<Order>>(`/api/v1/shops/${enc(shop.id)}/orders?sale=${enc(s.id)}&limit=100`);
      saleOrders.set(s.id, orders.items.length);
      const cell = salesBox.querySelector(`tr[data-sale="${CSS.escape(s.id)}"] .sale-orders`);
      if (cell) cell.textContent = String(orders.items.length);
    }
  };

  // Moderation.
  const slow = h('input', { type: 'number', min: 0, max: 3600, value: '0', name: 'slow-mode' });
  const slowButton = h('button', { type: 'button', class: 'secondary' }, 'Set slow mode');
  const words = h('textarea', { rows: 2, name: 'blocked-words', placeholder: 'one word per line' });
  const wordsButton = h('button', { type: 'button', class: 'secondary' }, 'Save blocked words');
  const moderator = h('input', { name: 'moderator', placeholder: 'usr_…' });
  const moderatorButton = h('button', { type: 'button', class: 'secondary' }, 'Appoint moderator');
  const modOut = h('p', {});
  slowButton.addEventListener('click', () => void act(slowButton, modOut, async () => void (await put(`/api/v1/rooms/${enc(room.id)}/slow-mode`, { seconds: Number(slow.value) || 0 }))));
  wordsButton.addEventListener('click', () => void act(wordsButton, modOut, async () => void (await put(`/api/v1/shops/${enc(shop.id)}/blocked-words`, { words: words.value.split('\n').map((w) => w.trim()).filter(Boolean) }))));
  moderatorButton.addEventListener('click', () => void act(moderatorButton, modOut, async () => (await put(`/api/v1/shops/${enc(shop.id)}/moderators/${enc(moderator.value.trim())}`, {}), await loadModeration())));
  get<{ words: string[] }>(`/api/v1/shops/${enc(shop.id)}/blocked-words`).then((b) => (words.value = b.words.join('\n')), () => undefined);
  const moderatorList = h('ul', { 'aria-label': 'Moderators' });
  const sanctionList = h('ul', { 'aria-label': 'Mutes and bans' });
  const loadModeration = async () => {
    const [moderators, sanctions] = await Promise.all([
      get<{ items: string[] }>(`/api/v1/shops/${enc(shop.id)}/moderators`),
      get<{ items: { user_id: string; kind: string; until: string | null }[] }>(`/api/v1/rooms/${enc(room.id)}/sanctions`),
    ]);
    const row = (label: string, action: string, run: () => Promise<void>) => {
      const button = h('button', { type: 'button', class: 'mini', 'aria-label': `${action} ${label}` }, action);
      button.addEventListener('click', () => void act(button, modOut, async () => (await run(), await loadModeration())));
      return h('li', {}, h('code', {}, label), ' ', button);
    };
    fill(moderatorList, moderators.items.length ? moderators.items.map((id) => row(id, 'Remove', () => del(`/api/v1/shops/${enc(shop.id)}/moderators/${enc(id)}`))) : h('li', { class: 'muted' }, 'No moderators.'));
    fill(
      sanctionList,
      sanctions.items.length
        ? sanctions.items.map((x) => row(`${x.user_id} (${x.kind === 'ban' ? 'banned' : `muted until ${time(x.until ?? '')}`})`, 'Lift', () => del(`/api/v1/rooms/${enc(room.id)}/sanctions/${enc(x.user_id)}`)))
        : h('li', { class: 'muted' }, 'Nobody is muted or banned.'),
    );
  };
  void loadModeration().catch((error) => notice(modOut, describe(error)));

  // End.
  const endButton = h('button', { type: 'button' }, 'End the room');
  const endOut = h('p', {});
  endButton.addEventListener('click', () => {
    if (!confirm('End this room for good? Viewers see the replay afterwards.')) return;
    void act(endButton, endOut, async () => {
      await patch(`/api/v1/rooms/${enc(room.id)}`, { status: 'ended' });
      location.hash = 'rooms';
    });
  });

  const dashboardBox = h('div', { 'aria-live': 'polite' });
  const statusBadge = h('span', { class: `status ${room.status}` }, room.status);
  const embed = `<iframe src="${location.origin}/embed/${room.id}" width="360" height="640" allow="autoplay; fullscreen" style="border:0"></iframe>`;
  fill(
    body,
    h('p', {}, h('a', { href: '#rooms' }, '← Rooms'), ' · ', h('a', { href: roomUrl, target: '_blank' }, 'Open the viewer page ↗')),
    h('h2', {}, room.title, ' ', statusBadge),
    h(
      'div',
      { class: 'grid2' },
      h('section', { class: 'panel' }, h('h3', {}, 'Preview'), h('div', { class: 'stage' }, preview.element), h('div', { class: 'stats' }, h('div', {}, 'Viewers', viewers)), stats),
      h('section', { class: 'panel' }, h('h3', {}, 'Go live from OBS'), keyBox, ended ? null : rotate, keyOut),
    ),
    h(
      'div',
      { class: 'grid2' },
      h('section', { class: 'panel' }, h('h3', {}, 'Pinned product'), pinnedNow, ended ? null : h('div', { class: 'row' }, pinSelect, pinButton, unpinButton), pinOut),
      h('section', { class: 'panel' }, h('h3', {}, 'Flash sales'), salesBox, ended ? null : saleForm),
    ),
    h(
      'div',
      { class: 'grid2' },
      h('section', { class: 'panel' }, h('h3', {}, 'Chat'), chat.element),
      h('section', { class: 'panel' }, h('h3', {}, 'Moderation'), field('Slow mode (seconds between messages; 0 is off)', slow), slowButton, field('Blocked words (all rooms of the shop)', words), wordsButton, field('Appoint a moderator (user id, from a chat message)', moderator), moderatorButton, h('h4', {}, 'Moderators'), moderatorList, h('h4', {}, 'Muted and banned'), sanctionList, modOut),
    ),
    h('section', { class: 'panel dashboard' }, h('h3', {}, 'Dashboard'), dashboardBox),
    h('section', { class: 'panel' }, h('h3', {}, 'Embed'), h('p', {}, 'Put the player on your own site; list the site under Settings → Embedding.'), h('code', {}, embed), ' ', copyButton('Copy snippet', () => embed)),
    ended ? null : h('section', { class: 'panel' }, h('h3', {}, 'End'), endButton, endOut),
  );
  cleanup.push(dashboard(room, dashboardBox));
  void loadSales().catch((error) => notice(saleOut, describe(error)));
  watchRoom(room, { preview, stats, viewers, pinnedNow, statusBadge }, chat, { sales: loadSales, moderation: loadModeration });
}

interface RoomViews {
  preview: Player;
  stats: HTMLElement;
  viewers: HTMLElement;
  pinnedNow: HTMLElement;
  statusBadge: HTMLElement;
}

function watchRoom(
  room: Room,
  views: RoomViews,
  chat: ReturnType<typeof createChat>,
  reload: { sales: () => Promise<void>; moderation: () => Promise<void> },
): void {
  const { preview, stats, viewers, pinnedNow, statusBadge } = views;
  const showStatus = (status: string) => {
    statusBadge.textContent = status;
    statusBadge.className = `status ${status}`;
  };
  const showPin = (card: PinnedCard | null) => fill(pinnedNow, card ? `Pinned: ${card.title} (${money(card.price)})` : 'Nothing pinned.');
  const socket = new RoomSocket(room.id, {
    snapshot(snapshot) {
      viewers.textContent = String(snapshot.viewers);
      showPin(snapshot.pinned);
      if (snapshot.chat) chat.reset(snapshot.chat);
      showStatus(snapshot.room.status);
      preview.play(snapshot.room.status === 'live' && snapshot.room.stream ? snapshot.room.stream.hls : null, true, 'Not receiving video. Start streaming in OBS.');
    },
    event(event) {
      const data = event.data ?? {};
      if (event.type === 'viewers') viewers.textContent = String(data.count);
      else if (event.type === 'chat') chat.add(data as unknown as ChatMessage);
      else if (event.type === 'chat.deleted') chat.remove(String(data.id));
      else if (event.type === 'pin') showPin(data as unknown as PinnedCard);
      else if (event.type === 'unpin') showPin(null);
      else if (event.type === 'stream.live') {
        showStatus('live');
        preview.play(String(data.hls), true);
      } else if (event.type === 'stream.ended') {
        showStatus('scheduled');
        preview.play(null, true, 'The stream stopped.');
      }
      else if (event.type.startsWith('sale.')) void reload.sales();
      else if (event.type.startsWith('user.')) void reload.moderation().catch(() => undefined);
    },
    error(_code, message) {
      chat.error(message);
    },
    connection() {},
  });
  const poll = async () => {
    try {
      const s = await get<StreamStats>(`/api/v1/rooms/${enc(room.id)}/stream`);
      fill(
        stats,
        stat('Bitrate', s.bitrate ? `${(s.bitrate / 1000).toFixed(0)} kbit/s` : '–'),
        stat('Frame rate', s.frame_rate ? `${s.frame_rate.toFixed(1)} fps` : '–'),
        stat('Resolution', s.width ? `${s.width}×${s.height}` : '–'),
        stat('Keyframes', s.keyframe_interval_ms ? `every ${(s.keyframe_interval_ms / 1000).toFixed(1)} s` : '–'),
        stat('Uptime', clock(s.uptime_seconds)),
        stat('Codecs', [s.video_codec, s.audio_codec].filter(Boolean).join(', ') || '–'),
      );
    } catch {
      fill(stats, h('div', {}, 'Stream', h('b', {}, 'offline')));
    }
  };
  void poll();
  const timer = window.setInterval(poll, 2000);
  cleanup.push(() => {
    clearInterval(timer);
    socket.close();
    preview.destroy();
  });
}

// ---- Dashboard ----

const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

/** Viewers as a line and orders as bars over the live's intervals. */
function chart(stats: RoomStats): SVGSVGElement {
  const width = 600;
  const height = 140;
  const points = stats.series;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'chart' });
  const title = svg('title', {});
  title.textContent = `Viewers (line) and orders (bars) over ${points.length} intervals of ${stats.interval_seconds} s`;
  root.append(title);
  if (points.length === 0) return root;
  const start = Date.parse(points[0].at);
  const end = Math.max(Date.parse(points[points.length - 1].at), start + 1);
  const x = (at: string) => 4 + ((Date.parse(at) - start) / (end - start)) * (width - 8);
  const maxViewers = Math.max(1, ...points.map((p) => p.viewers));
  const maxOrders = Math.max(1, ...points.map((p) => p.orders));
  for (const p of points.filter((p) => p.orders > 0)) {
    const h = (p.orders / maxOrders) * (height - 20);
    root.append(svg('rect', { x: x(p.at) - 2, y: height - h, width: 4, height: h, class: 'bar' }));
  }
  const line = points.map((p) => `${x(p.at).toFixed(1)},${(height - 4 - (p.viewers / maxViewers) * (height - 20)).toFixed(1)}`).join(' ');
  root.append(svg('polyline', { points: line, class: 'line' }));
  return root;
}

function dashboard(room: Room, box: HTMLElement): () => void {
  const load = async () => {
    const stats = await get<RoomStats>(`/api/v1/rooms/${enc(room.id)}/stats`);
    fill(
      box,
      h(
        'div',
        { class: 'stats' },
        stat('Watching now', String(stats.viewers_now)),
        stat('Peak viewers', String(stats.peak_viewers)),
        stat('Messages', `${stats.messages} from ${stats.chatters}`),
        stat('Likes', String(stats.likes)),
        stat('Orders', `${stats.orders} (${stats.paid_orders} paid)`),
        stat('Revenue', money(stats.revenue)),
        stat('Conversion', `${(stats.conversion * 100).toFixed(1)} %`),
      ),
      chart(stats),
      h('p', { class: 'muted' }, 'Conversion: buyers per viewer at the peak. Viewers and likes are sampled every ', String(stats.interval_seconds), ' s.'),
    );
  };
  const out = h('p', {});
  void load().catch((error) => notice(out, describe(error)));
  const timer = window.setInterval(() => void load().catch(() => undefined), 5000);
  return () => clearInterval(timer);
}

// ---- Orders ----

const STATES = ['reserved', 'paid', 'fulfilled', 'cancelled', 'expired', 'refunded', 'partially_refunded'];

async function ordersView(body: HTMLElement): Promise<void> {
  const filter = h('select', { 'aria-label': 'Status', name: 'status' }, h('option', { value: '' }, 'All states'), STATES.map((s) => h('option', { value: s }, s)));
  const rooms = await get<Page<Room>>(`/api/v1/shops/${enc(shop.id)}/rooms?limit=100`);
  const roomFilter = h('select', { 'aria-label': 'Room', name: 'room' }, h('option', { value: '' }, 'All rooms'), rooms.items.map((r) => h('option', { value: r.id }, r.title)));
  const list = h('div', {});
  const out = h('p', {});
  const load = async () => {
    const query = (filter.value ? `&status=${filter.value}` : '') + (roomFilter.value ? `&room=${enc(roomFilter.value)}` : '');
    const orders = await get<Page<Order>>(`/api/v1/shops/${enc(shop.id)}/orders?limit=100${query}`);
    fill(
      list,
      orders.items.length
        ? h(
            'table',
            {},
            h('thead', {}, h('tr', {}, h('th', {}, 'Order'), h('th', {}, 'Items'), h('th', {}, 'Total'), h('th', {}, 'Status'), h('th', {}, 'Actions'))),
            h('tbody', {}, orders.items.map((o) => orderRow(o, load))),
          )
        : h('p', { class: 'muted' }, 'No orders.'),
    );
  };
  for (const select of [filter, roomFilter]) select.addEventListener('change', () => void load().catch((e) => notice(out, describe(e))));
  fill(body, h('section', { class: 'panel' }, h('h2', {}, 'Orders'), h('div', { class: 'row' }, filter, roomFilter), out, list));
  await load();
}

function orderRow(order: Order, reload: () => Promise<void>): HTMLElement {
  const out = h('span', {});
  const actions = h('div', {});
  if (order.status === 'paid') {
    const carrier = h('input', { placeholder: 'Carrier', 'aria-label': 'Carrier', name: 'carrier' });
    const tracking = h('input', { placeholder: 'Tracking number', 'aria-label': 'Tracking number', name: 'tracking' });
    const ship = h('button', { type: 'button', class: 'mini' }, 'Mark fulfilled');
    ship.addEventListener('click', () => void act(ship, out, async () => void (await post(`/api/v1/orders/${enc(order.id)}/fulfillments`, { carrier: carrier.value, tracking_number: tracking.value }), await reload())));
    actions.append(carrier, tracking, ship);
  }
  const refundable = order.paid.amount - order.refunded.amount;
  if (refundable > 0) {
    const amount = h('input', { 'aria-label': 'Refund amount', name: 'refund', value: decimal(refundable, order.total.currency), inputmode: 'decimal' });
    const restock = h('input', { type: 'checkbox', 'aria-label': 'Restock' });
    restock.style.width = 'auto';
    const refund = h('button', { type: 'button', class: 'mini' }, 'Refund');
    refund.addEventListener('click', () =>
      void act(refund, out, async () => {
        const value = parseMoney(amount.value, order.total.currency, 'an amount');
        await post(`/api/v1/orders/${enc(order.id)}/refunds`, { amount: value, reason: 'refunded by the seller', restock: restock.checked });
        await reload();
      }),
    );
    actions.append(h('div', { class: 'row' }, amount, h('label', {}, restock, ' restock'), refund));
  }
  return h(
    'tr',
    { 'data-order': order.id },
    h('td', {}, h('code', {}, order.id), h('br'), h('small', {}, time(order.created_at))),
    h('td', {}, order.lines.map((l) => h('div', {}, `${l.quantity} × ${l.title}`))),
    h('td', {}, money(order.total), order.refunded.amount ? h('small', {}, ` (refunded ${money(order.refunded)})`) : null),
    h('td', { class: `status ${order.status}` }, order.status, order.shipment ? h('small', {}, ` ${order.shipment.carrier} ${order.shipment.tracking_number}`) : null),
    h('td', {}, actions, out),
  );
}

// ---- Settings ----

function settingsView(body: HTMLElement): void {
  const name = h('input', { name: 'name', value: shop.name, required: true });
  const description = h('textarea', { name: 'description', rows: 3 });
  description.value = shop.description;
  const origins = h('textarea', { name: 'embed-origins', rows: 3, placeholder: 'https://myshop.example' });
  origins.value = (shop.embed_origins ?? []).join('\n');
  const out = h('p', {});
  const form = h(
    'form',
    { class: 'panel' },
    field('Shop name', name),
    field('Description', description),
    h('h3', {}, 'Embedding'),
    field('Sites that may show your player in a frame, one origin per line', origins, 'Such as https://myshop.example; your rooms\' /embed/ pages refuse to load in frames of any other site.'),
    out,
    h('button', { type: 'submit' }, 'Save'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(form.querySelector('button'), out, async () => {
      shop = await patch<Shop>(`/api/v1/shops/${enc(shop.id)}`, {
        name: name.value,
        description: description.value,
        embed_origins: origins.value.split('\n').map((o) => o.trim()).filter(Boolean),
      });
      notice(out, 'Saved.', 'ok');
    });
  });
  fill(body, form);
}

window.addEventListener('hashchange', () => void route().catch(showError));
function showError(error: unknown): void {
  const out = h('p', {});
  main.append(out);
  notice(out, describe(error));
}
route().catch(showError);
