/*
 * A 512-byte MBR boot sector for test_iscsi_ipxe.sh: print a marker on COM1 and halt.
 *
 * The BIOS (here: iPXE's INT 13h SAN drive, reading LBA 0 over iSCSI) loads this sector at
 * 0000:7c00 and jumps to it in real mode, so the code is 16-bit and linked at 0x7c00. It talks
 * to the 16550 UART directly (no BIOS call) so the marker can only come from this sector
 * running, not from anything iPXE prints.
 *
 * Build (the test does this):
 *   as --32 -o mbr.o sanboot_mbr.s
 *   ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o mbr.bin mbr.o
 * To print something else: as --32 --defsym ALT_MARKER=1 ... (used to check that the test
 * fails without the marker).
 */
	.code16
	.text
	.globl _start
_start:
	cli
	xorw	%ax, %ax
	movw	%ax, %ds		/* msg is addressed from segment 0 */
	movw	%ax, %ss
	movw	$0x7c00, %sp		/* stack grows down below this sector */
	cld				/* lodsb walks forwards */

	/* COM1 at 0x3f8: 115200 baud (divisor 1), 8 data bits, no parity, 1 stop bit. */
	movw	$0x3fb, %dx		/* line control */
	movb	$0x80, %al		/* DLAB=1: ports 0x3f8/0x3f9 are the divisor latch */
	outb	%al, %dx
	movw	$0x3f8, %dx
	movb	$1, %al
	outb	%al, %dx
	movw	$0x3f9, %dx
	xorb	%al, %al
	outb	%al, %dx
	movw	$0x3fb, %dx
	movb	$0x03, %al		/* DLAB=0, 8N1 */
	outb	%al, %dx

	movw	$msg, %si
next:
	lodsb				/* %al = *%si++ */
	testb	%al, %al
	jz	done
	movb	%al, %bl
	movw	$0x3fd, %dx		/* line status */
wait_thre:
	inb	%dx, %al
	testb	$0x20, %al		/* transmit holding register empty? */
	jz	wait_thre
	movw	$0x3f8, %dx		/* transmit holding register */
	movb	%bl, %al
	outb	%al, %dx
	jmp	next

done:
	cli
	hlt				/* interrupts off: stays here; loop in case of an NMI */
	jmp	done

msg:
.ifdef ALT_MARKER
	.asciz	"\r\nNOT-THE-MARKER\r\n"
.else
	.asciz	"\r\nSTRATA-SANBOOT-OK\r\n"
.endif

	/* Pad to 510 bytes, then the boot signature the BIOS checks before jumping here. */
	.org	510
	.byte	0x55, 0xaa
