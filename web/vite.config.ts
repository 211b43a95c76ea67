import { defineConfig } from 'vite';

// One HTML entry per page, so each page loads only its own code; what pages
// share (the API client, the header, the player) becomes shared chunks.
export default defineConfig({
  build: {
    target: 'es2022',
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    rollupOptions: {
      input: {
        index: 'index.html',
        room: 'room.html',
        studio: 'studio.html',
        orders: 'orders.html',
        embed: 'embed.html',
      },
    },
  },
});
