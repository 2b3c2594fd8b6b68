"""multi2cap.vggcaps"""
