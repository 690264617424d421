;; A WebAssembly function of the shipped examples/hub.toml, in the text format (the hub
;; compiles it at start): its answer is the payload with ASCII letters upper-cased.
;;
;; The interface of fnhub's WebAssembly functions: the hub calls `fnhub_alloc(len)` for
;; room for the payload, writes it there, and calls the handler with (ptr, len); the
;; handler answers (out_ptr << 32) | out_len. `fnhub.log(level, ptr, len)` writes a log
;; line with the invocation's request id.
(module
  (import "fnhub" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (data (i32.const 16) "upper-casing a payload")

  ;; A bump allocator from 1 KiB up, growing memory as needed (each invocation has a
  ;; fresh instance, so nothing is freed).
  (func (export "fnhub_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $n))
                  (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 16)) (i32.const 1)))
                    (i32.const -1))
          (then unreachable))))
    (global.set $next (i32.add (local.get $p) (local.get $n)))
    (local.get $p))

  ;; Upper-cases the payload in place and answers it.
  (func (export "handle") (param $p i32) (param $n i32) (result i64)
    (local $i i32)
    (local $c i32)
    (call $log (i32.const 2) (i32.const 16) (i32.const 22))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 97))
                     (i32.le_u (local.get $c) (i32.const 122)))
          (then
            (i32.store8 (i32.add (local.get $p) (local.get $i))
                        (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32))
            (i64.extend_i32_u (local.get $n))))
)
