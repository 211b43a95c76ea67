// The shapes the API answers with (see /api/openapi.json), as far as the pages read them.
import type { Money } from './api';

export interface User {
  id: string;
  email?: string;
  display_name: string;
  role?: string;
}

export interface Shop {
  id: string;
  handle: string;
  name: string;
  description: string;
  currency: string;
  owner_id: string;
  embed_origins: string[];
}

export interface Me {
  user: User;
  shops: Shop[];
}

export interface Variant {
  id: string;
  product_id: string;
  sku: string;
  options: Record<string, string>;
  price: Money;
  stock_on_hand: number;
}

export interface Product {
  id: string;
  shop_id: string;
  title: string;
  description: string;
  status: string;
  images: string[];
  variants: Variant[];
}

export interface RoomStream {
  started_at: string;
  hls: string;
  flv: string;
}

export interface Room {
  id: string;
  shop_id: string;
  title: string;
  description: string;
  status: 'scheduled' | 'live' | 'ended';
  scheduled_start: string | null;
  started_at: string | null;
  ended_at: string | null;
  cover_image: string | null;
  /** In the directory (`GET /api/v1/rooms`): viewers connected on this node. */
  viewers?: number;
}

/** The room as the WebSocket's snapshot carries it. */
export interface LiveRoom {
  id: string;
  shop_id: string;
  title: string;
  status: 'scheduled' | 'live' | 'ended';
  started_at: string | null;
  stream: RoomStream | null;
}

export interface Snapshot {
  room: LiveRoom;
  viewers: number;
  likes: number;
  sale: Sale | null;
  pinned: PinnedCard | null;
  slow_mode_seconds: number;
  chat?: ChatMessage[];
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface Sale {
  sale_id: string;
  variant_id: string;
  available: number;
  quantity: number;
  status: string;
  price: Money;
  ends_at: string;
}

export interface FlashSale {
  id: string;
  room_id: string;
  variant_id: string;
  price: Money;
  quantity: number;
  available: number;
  per_buyer_limit: number;
  status: string;
  starts_at: string;
  ends_at: string;
}

export interface PinnedCard {
  product_id: string;
  title: string;
  image: string | null;
  price: Money;
  variants: { id: string; sku: string; options: Record<string, string>; price: Money; stock: number }[];
  pinned_at: string;
}

export interface ChatMessage {
  id: string;
  user: { id: string; name: string; moderator?: boolean };
  text: string;
}

export interface OrderLine {
  variant_id: string;
  product_id: string;
  sku: string;
  title: string;
  quantity: number;
  unit_price: Money;
}

export interface OrderEvent {
  id: string;
  status: string;
  actor_id: string | null;
  reason: string;
  amount: Money | null;
  at: string;
}

export interface Order {
  id: string;
  buyer_id: string;
  shop_id: string;
  room_id: string | null;
  sale_id: string | null;
  status: string;
  lines: OrderLine[];
  total: Money;
  paid: Money;
  refunded: Money;
  expires_at: string | null;
  shipment: { carrier: string; tracking_number: string } | null;
  history: OrderEvent[];
  created_at: string;
}

export interface StreamStats {
  live: boolean;
  hls_url: string;
  flv_url: string;
  video_codec: string | null;
  audio_codec: string | null;
  width: number | null;
  height: number | null;
  frame_rate: number | null;
  bitrate: number | null;
  keyframe_interval_ms: number | null;
  uptime_seconds: number;
  publishers: number;
}

export interface TimelineEntry {
  at_ms: number;
  type: 'pin' | 'unpin' | 'sale.started' | 'sale.ended' | 'chat';
  data: Record<string, unknown>;
}

export interface Recording {
  id: string;
  room_id: string;
  status: 'recording' | 'complete';
  playlist_url: string;
  started_at: string;
  ended_at: string | null;
  duration_ms: number;
  timeline?: TimelineEntry[];
}

export interface RoomStats {
  room_id: string;
  interval_seconds: number;
  series: { at: string; viewers: number; likes: number; messages: number; orders: number }[];
  viewers_now: number;
  peak_viewers: number;
  likes: number;
  messages: number;
  chatters: number;
  orders: number;
  paid_orders: number;
  buyers: number;
  revenue: Money;
  conversion: number;
}
